import contextlib
import importlib
import os
import pkgutil
import sys

# Tests run offline: nothing may reach a hub. Set before huggingface_hub is imported: it reads them then.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import sdft  # noqa: E402
import sdft.core.models  # noqa: E402
import sdft.train.trainer  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each (subprocesses inherit it) instead of four fighting threads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the checkout; tests that need them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def _tiny_model_dir(root: Path) -> Path:
    """A randomly initialised 2-layer Llama with the embedded model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sdft.core.models import default_gguf_path

    gguf = default_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True, initializer_range=0.3,  # large enough that greedy replies vary
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture
def interrupt_generation(monkeypatch):
    """interrupt_generation(n): the next generation raises KeyboardInterrupt (as Ctrl-C would) once n
    batches are done; interrupt_generation(None) lets generation run through again."""
    import sdft.engine.resumable

    real = sdft.engine.resumable.iter_generate

    def arm(batches: int | None) -> None:
        def interrupted(*args, **kwargs):
            for i, item in enumerate(real(*args, **kwargs)):
                if i == batches:
                    raise KeyboardInterrupt
                yield item

        monkeypatch.setattr(sdft.engine.resumable, "iter_generate", real if batches is None else interrupted)

    return arm


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny random chat model saved on disk (loads like any hub model, nothing downloaded)."""
    return str(_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama")))


# The longest tests (`pytest --durations=15`, 50-110 s each on 2 cores) start first: with two workers, a
# long test that starts last keeps one worker busy while the other idles (about a minute of wall time).
LONGEST_FIRST = (
    "tests/test_session.py::test_killed_train_resumes_like_uninterrupted",
    "tests/test_resume_distill.py::test_killed_five_times_resumes_to_identical_output",
    "tests/test_gpu_check.py",
    "tests/test_scale_out.py",
    "tests/test_humaneval.py::test_all_canonical_solutions_pass_through_the_cli",
    "tests/test_runstate.py::test_a_second_distill_on_the_same_output_refuses_at_once",
    "tests/test_metric_declarations.py",
    "tests/test_cli.py::test_run_recipe_end_to_end",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model or start training fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded")

    # Every sdft module is imported first, so none can bind the stand-in at import time and keep it after
    # the test (a module first imported here would hold `forbidden` for the rest of the worker's tests);
    # then each module's own binding of a loader is replaced, wherever it was imported from.
    for info in pkgutil.walk_packages(sdft.__path__, "sdft."):
        with contextlib.suppress(ImportError):  # an optional extra that is not installed
            importlib.import_module(info.name)
    real = {getattr(sdft.core.models, name) for name in
            ("load_model", "load_tokenizer", "resolve_model", "convert_default_model")}
    real.add(sdft.train.trainer.train)
    for module in [m for name, m in sys.modules.items() if name == "sdft" or name.startswith("sdft.")]:
        for attr, value in list(vars(module).items()):
            if any(value is fn for fn in real):
                monkeypatch.setattr(module, attr, forbidden)
    # wherever a stage imported them from: no weights or tokenizer may be read
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", forbidden)


def tiny_llama_in_memory(initializer_range: float = 0.02):
    """(model, tokenizer): a random 2-layer Llama with the embedded model's tokenizer, not saved anywhere."""
    from sdft.core.models import load_tokenizer

    tok = load_tokenizer("default")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, initializer_range=initializer_range)
    return transformers.LlamaForCausalLM(config).eval(), tok


@pytest.fixture(scope="session")
def make_tiny_llama():
    return tiny_llama_in_memory


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama_in_memory()
