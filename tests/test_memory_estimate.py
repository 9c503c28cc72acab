"""The training memory estimate (sdft.train.memory_estimate): Llama-2-7B's figures against docs/PERFORMANCE.md's
arithmetic, the activation formula against what PyTorch really keeps for backward, and the CLI's
dry run and refusal."""

import contextlib
import json

import pytest
import torch

from sdft.cli import main
from sdft.train.memory_estimate import GIB, activation_bytes_per_token_layer, estimate, model_shape
from sdft.core.config import TrainConfig
H, LAYERS, HEADS, INTER, VOCAB = 4096, 32, 32, 11008, 32000


@pytest.fixture(scope="module")
def llama2_dir(tmp_path_factory):
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("llama2-7b-shape")
    LlamaConfig(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                intermediate_size=INTER, vocab_size=VOCAB, max_position_embeddings=4096,
                tie_word_embeddings=False).save_pretrained(path)
    return path


def doc_arithmetic(bits4: bool, checkpointing: bool, batch: int = 8, length: int = 1024, r: int = 8) -> dict:
    """docs/PERFORMANCE.md's formulas, written out by hand for LoRA on q_proj and v_proj in bf16 on a GPU
    (bf16 weights train without autocast, with fp32 adapter tensors; QLoRA under autocast)."""
    linear_per_layer = 4 * H * H + 3 * H * INTER
    linear = LAYERS * linear_per_layer
    other = 2 * VOCAB * H + LAYERS * 2 * H + H  # embeddings, lm_head, norms
    params = linear + other
    weights = linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + other * 2 if bits4 else params * 2
    lora = LAYERS * 2 * r * (H + H) * 16
    tokens = batch * length
    adapter_bytes = 2 if bits4 else 4
    per_layer = 8 * H + 2 * 4 * H + 2 * 3 * INTER + adapter_bytes * 2 * (H + r) + 1 * 2 * H
    acts = tokens * (LAYERS * 2 * H + per_layer) if checkpointing else tokens * LAYERS * per_layer
    logits = tokens * VOCAB * (10 if bits4 else 4)
    return {"params": params, "weights": weights, "lora": lora, "activations": acts, "logits": logits,
            "total": weights + lora + acts + logits + GIB}


@pytest.mark.parametrize("bits4,checkpointing", [(False, False), (False, True), (True, True)])
def test_llama2_7b_matches_the_documented_arithmetic(llama2_dir, bits4, checkpointing):
    from sdft.train.memory_estimate import load_config

    cfg = TrainConfig(gradient_checkpointing=checkpointing, load_in_4bit=bits4)
    shape = model_shape(load_config(str(llama2_dir)), cfg)
    est = estimate(shape, cfg, torch.bfloat16, "cuda")
    doc = doc_arithmetic(bits4, checkpointing)
    assert shape.params == doc["params"] == 6_738_415_616  # the published 6.74B
    for term in ("weights", "lora", "activations", "logits", "total"):
        got = est.total if term == "total" else getattr(est, term)
        assert abs(got - doc[term]) <= 0.15 * doc[term], (term, got / GIB, doc[term] / GIB)
    # The figures docs/PERFORMANCE.md prints (GiB, one decimal)
    expected_total = {(False, False): 56.7, (False, True): 17.9, (True, True): 10.3}[(bits4, checkpointing)]
    assert round(est.total / GIB, 1) == pytest.approx(expected_total, abs=0.1)


def test_all_linear_adapts_every_linear_layer(llama2_dir):
    from sdft.train.memory_estimate import load_config

    shape = model_shape(load_config(str(llama2_dir)), TrainConfig(target_modules="all-linear"))
    per_layer = 4 * 8 * (H + H) + 2 * 8 * (H + INTER) + 8 * (INTER + H)  # q,k,v,o; gate, up; down
    assert shape.lora_params == LAYERS * per_layer
    assert shape.lora_modules == 7


def _saved_bytes(layers: int, dtype: torch.dtype, autocast: bool, targets, dropout: float) -> tuple[int, object]:
    """Bytes of the tensors autograd keeps for backward (parameters excluded) after one forward pass."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=500, attn_implementation="sdpa")
    model = get_peft_model(LlamaForCausalLM(config).to(dtype), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        model(input_ids=torch.randint(0, 500, (1, 256)), use_cache=False, logits_to_keep=1)
    return sum(kept.values()), config


@pytest.mark.parametrize("base,autocast,targets", [
    (torch.float32, False, ["q_proj", "v_proj"]),  # float32 training
    (torch.bfloat16, False, "all-linear"),  # bf16 weights as sdft train runs them: fp32 adapters, no autocast
    (torch.bfloat16, True, "all-linear"),  # bf16 under autocast (QLoRA's way)
])
def test_activation_formula_matches_what_autograd_keeps(base, autocast, targets):
    """With dropout, one more layer costs what the formula says."""
    small, config = _saved_bytes(2, base, autocast, targets, 0.05)
    large, _ = _saved_bytes(4, base, autocast, targets, 0.05)
    measured = (large - small) / 2 / 256  # per layer per token
    shape = model_shape(config, TrainConfig(target_modules=targets))
    act = torch.empty((), dtype=base).element_size()
    formula = activation_bytes_per_token_layer(shape, act, 8, 0.05, mask=4,  # CPU dropout masks are float
                                               adapter_act=act if autocast else 4)
    assert formula == pytest.approx(measured, rel=0.05)


def test_dry_run_prints_the_estimate_and_loads_nothing(tiny_model, tmp_path, capsys):
    assert main(["train", "--model", tiny_model, "--dry-run", "--set", "max_length=64", "--set", "batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert "memory estimate" in out and "activations (128 tokens x 2 layers)" in out and "fits" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_with_data_estimates_its_longest_steps(tiny_model, tmp_path, capsys):
    """With --data, a step holds the batch_size longest rows and logits only at response tokens."""
    from sdft.core.models import load_tokenizer
    from sdft.train.memory_estimate import step_tokens

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "word " * (5 + 7 * i), "response": "yes " * (3 + i)}) + "\n"
                            for i in range(6)))
    assert main(["train", "--model", tiny_model, "--dry-run", "--data", str(data), "--set", "batch_size=2"]) == 0
    out = capsys.readouterr().out
    tok = load_tokenizer(tiny_model)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    chats = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}],
                                     tokenize=False) for r in rows]
    longest = sorted((len(tok(c, add_special_tokens=False)["input_ids"]) for c in chats), reverse=True)[:2]
    assert f"activations ({sum(longest)} tokens x 2 layers)" in out
    tokens, response = step_tokens([{"input_ids": [1] * 9, "labels": [-100] * 5 + [1] * 4},
                                    {"input_ids": [1] * 7, "labels": [-100] * 1 + [1] * 6},
                                    {"input_ids": [1] * 3, "labels": [-100] * 2 + [1]}], 2)
    assert (tokens, response) == (16, 10)  # the two longest rows; the two largest responses (not one row's)
    assert f"logits ({response} response tokens)" not in out  # the data's own count is printed instead
    assert "response tokens)" in out and "at most all" not in out


def test_too_big_stops_with_advice_before_anything_is_written(tiny_model, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    # The estimate is for the data's longest steps: 2,000 rows of ~200 response tokens in one step is
    # 400k positions of 49k-word logits and their gradient, far more than any test machine has
    data.write_text("".join(json.dumps({"prompt": f"row {i}", "response": "hello there " * 100}) + "\n"
                            for i in range(2000)))
    out = tmp_path / "run"
    code = main(["train", "--model", tiny_model, "--data", str(data), "--out", str(out),
                 "--set", "batch_size=4096", "--set", "max_length=1024"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "training needs about" in err and "gradient_checkpointing: true" in err and "batch_size: 1024" in err
    assert not out.exists()


def test_unknown_target_module_is_a_config_error(tiny_model, capsys):
    assert main(["train", "--model", tiny_model, "--dry-run", "--set", "target_modules=[qq_proj]"]) == 2
    assert "train.target_modules" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_4bit_without_a_gpu_says_so(tiny_model, capsys):
    assert main(["train", "--model", tiny_model, "--dry-run", "--set", "load_in_4bit=true"]) == 1
    assert "load_in_4bit needs a CUDA GPU" in capsys.readouterr().err


def test_gradient_checkpointing_and_all_linear_train_the_same(tiny_model, tmp_path):
    from sdft.data.example import Example
    from sdft.train.trainer import train

    examples = [Example(id=str(i), row=i, instruction=f"What is {i} plus {i}?", response=f"It is {2 * i}.")
                for i in range(4)]
    runs = {}
    for gc in (False, True):
        cfg = TrainConfig(target_modules="all-linear", gradient_checkpointing=gc, lora_r=4, lora_alpha=12,
                          max_steps=2, batch_size=2, save_steps=100)
        runs[gc] = train(tiny_model, examples, tmp_path / str(gc), cfg, progress=False)
    def losses(gc):
        rows = [json.loads(line) for line in (tmp_path / str(gc) / "train_log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert len(losses(True)) == 2
    assert losses(True) == pytest.approx(losses(False), rel=1e-4)
    adapter = json.loads((tmp_path / "True" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 12
    assert {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}
