"""Every setting of sdft, in one place: nested dataclasses read from YAML and `key=value` overrides.

Each field's type is the contract: values from a YAML file, a `--set key=value` or a command-line flag
are converted to it (`convert`), and a value that cannot be is a ConfigError naming the key and the
type, before any model loads. Each field's `help` is what the command line prints for its flag.

This module imports the standard library, yaml and sdft.core.errors only, so any layer may read it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from sdft.core.errors import InputError

# What the data is: picks the distillation template and the answer check of the filter.
TASKS = ("math", "function", "code", "general")
# Fine-tuning methods `sdft run` compares; each trains on one column of the distilled file
# (onpolicy: the teacher's reference; sdft.train.onpolicy).
METHODS = {"sft": "original", "sdft": "response", "onpolicy": "original"}
DEFAULT_MODEL = "default"  # the embedded SmolLM2-135M-Instruct (sdft.core.models)
# Candidates' sampling presets: the SDFT paper's code, and the model's own distribution.
SAMPLING = {
    "paper": {"temperature": 0.95, "top_p": 0.7, "top_k": 50},
    "model": {"temperature": 1.0, "top_p": 1.0, "top_k": 0},
}
ONPOLICY_TEACHERS = ("base", "live", "ema")
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


class ConfigError(InputError):
    pass


def setting(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, help: str = ""):
    """A dataclass field with its command-line help."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelSpec:
    name: str = setting(DEFAULT_MODEL, help="hub id, local folder, or 'default' (the embedded SmolLM2-135M-Instruct)")
    dtype: str = setting("auto", help="auto (bf16 on capable GPUs; on a CPU bf16 only where it timed clearly "
                         "faster than float32 at the model's shapes, measured once per machine and cached), "
                         "float32, bfloat16, float16")
    device: str | None = setting(None, help="cpu, cuda, cuda:1 ... (default: this process's GPU under accelerate "
                                 "launch, else cuda if available)")
    trust_remote_code: bool = setting(False, help="run model code from the hub (off unless asked)")
    revision: str | None = setting(None, help="hub branch, tag or commit of the model (default: main)")

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype: '{self.dtype}' is not one of {', '.join(DTYPES)}")


@dataclass
class DataConfig:
    source: str = setting("builtin:arithmetic", help="JSON/JSONL/CSV/Parquet file, hub dataset "
                          "(name:config:split), or builtin:arithmetic?n=N&seed=S")
    task: str = setting("math", help="what the data is: " + ", ".join(TASKS))
    columns: dict[str, str] | None = setting(None, help="column names, e.g. prompt=question,response=answer")
    limit: int | None = setting(None, help="use the first N rows")

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"data.task: '{self.task}' is not one of {', '.join(TASKS)}")


@dataclass
class DistillConfig:
    template: str | None = setting(None, help="distillation template: using, refer, math, or a file "
                                   "(default: the task's)")
    # Prompts per batch (the unit that is resumed and shared out across processes); within a batch at
    # most max_rows rows decode at once, and a finished row takes the next waiting prompt.
    batch_size: int = setting(256, help="prompts per batch: the unit of resume and of sharding across processes")
    max_new_tokens: int = setting(512, help="tokens per rewrite")
    max_batch_tokens: int = setting(32768, help="rows decoding at once x (prompt + new tokens): bounds "
                                    "KV-cache memory")
    max_rows: int = setting(48, help="rows decoding at once in each worker (48 suits 2-4 CPU cores; raise "
                            "it on a GPU)")
    workers: int = setting(0, help="CPU only: processes decoding a batch, one thread each (0: one per core "
                           "on CPUs with 2-4 threads for batches of 96+ prompts, else 1)")
    backend: str = setting("transformers", help="transformers, or vllm (GPU only: pip install 'sdft[vllm]')")
    tensor_parallel: int = setting(1, help="vllm: GPUs per model replica")
    data_parallel: int = setting(1, help="vllm: model replicas, each on a shard of the prompts")
    # Candidates (sdft.distill.candidates): besides the greedy rewrite, candidates - 1 sampled ones and,
    # with self_answer, the seed's own answer to the plain instruction; a row keeps the passing one the
    # seed finds most likely under the training prompt.
    candidates: int = setting(1, help="rewrites per row: the greedy one and N-1 sampled; of those that pass "
                              "the checks the row keeps the one the seed finds most likely under the "
                              "plain training prompt")
    self_answer: bool = setting(False, help="the seed's own greedy answer to the plain instruction joins "
                                "the candidates")
    temperature: float = setting(1.0, help="candidates' sampling temperature")
    top_p: float = setting(1.0, help="candidates' nucleus sampling threshold (1: off)")
    top_k: int = setting(0, help="candidates' top-k filter (0: off)")
    seed: int = setting(0, help="sampling seed; each row mixes in its prompt")
    max_context: int | None = setting(None, help="tokens a prompt plus its reply may take (default: the "
                                      "model's); longer rows keep their original response")

    def __post_init__(self):
        if self.candidates < 1:
            raise ConfigError(f"distill.candidates must be >= 1, got {self.candidates}")
        if self.candidates > 1:
            if not self.temperature > 0:
                raise ConfigError(f"distill.temperature must be > 0 to sample candidates, got {self.temperature}")
            if not 0 < self.top_p <= 1:
                raise ConfigError(f"distill.top_p must be in (0, 1], got {self.top_p}")
            if self.top_k < 0:
                raise ConfigError(f"distill.top_k must be >= 0 (0: off), got {self.top_k}")
        if self.backend not in ("transformers", "vllm"):
            raise ConfigError(f"distill.backend: '{self.backend}' is not one of transformers, vllm")
        if (self.candidates > 1 or self.self_answer) and self.backend != "transformers":
            # choosing among candidates scores them with the loaded model, which the vLLM path does not load
            raise ConfigError("distill.candidates > 1 and distill.self_answer need the transformers backend")
        if self.workers < 0:
            raise ConfigError(f"distill.workers must be 0 (auto) or >= 1, got {self.workers}")


@dataclass
class TrainConfig:
    # LoRA as in the paper's runs
    lora_r: int = setting(8, help="LoRA rank")
    lora_alpha: int = setting(16, help="LoRA alpha")
    lora_dropout: float = setting(0.05, help="LoRA dropout")
    target_modules: list[str] | str = setting(factory=lambda: ["q_proj", "v_proj"],
                                              help="module names to adapt, or all-linear")
    learning_rate: float = setting(1e-4, help="peak learning rate")
    lr_scheduler: str = setting("cosine", help="transformers' lr_scheduler_type")
    warmup_steps: float = setting(0, help="warm-up: steps, or below 1 a fraction of all steps")
    epochs: float = setting(2.0, help="passes over the data")
    max_steps: int = setting(-1, help="optimizer steps; > 0 overrides epochs")
    batch_size: int = setting(8, help="sequences per step and process")
    grad_accum: int = setting(1, help="micro-batches per optimizer step (the step averages their per-token "
                              "mean losses)")
    max_length: int = setting(1024, help="tokens per row; longer responses are cut")
    weight_decay: float = setting(0.0, help="AdamW weight decay")
    seed: int = setting(42, help="training seed")
    save_steps: int = setting(50, help="checkpoint every N steps; a rerun resumes from the latest")
    curve_steps: list[int] | None = setting(None, help="steps at which the adapter is kept for the learning-"
                                            "against-forgetting curve (default: powers of two up to the last "
                                            "step); the final adapter is its last point")
    logging_steps: int = setting(1, help="log the loss every N steps")
    dtype: str = setting("auto", help="base weights and compute: auto (bf16 on capable GPUs; on a CPU bf16 "
                         "only where it timed clearly faster than float32, measured once per machine), "
                         "float32, bfloat16, float16; LoRA stays float32")
    # Keep only each layer's input and recompute the rest in backward: activations shrink ~10x for a
    # 7B model. Results are the same, so a run may resume with it switched on.
    gradient_checkpointing: bool = setting(False, help="keep only each layer's input for backward "
                                           "(activations ~10x smaller)")
    report_to: list[str] = setting(factory=lambda: ["none"], help="experiment trackers for the training loss "
                                   "and the final metrics, as transformers takes them: none, tensorboard, "
                                   "wandb, trackio, mlflow ...")
    load_in_4bit: bool = setting(False, help="QLoRA: NF4 base weights through bitsandbytes (CUDA only; "
                                 "pip install 'sdft[qlora]')")

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"train.dtype: '{self.dtype}' is not one of {', '.join(DTYPES)}")
        for name in ("lora_r", "batch_size", "grad_accum", "max_length", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class OnPolicyConfig:
    """TRL's SDFTConfig defaults; the LoRA, optimizer and step settings come from TrainConfig."""

    teacher: str = setting("base", help="base: the seed (adapter off); live: the current student; ema: its "
                           "moving average")
    topk: int = setting(100, help="the divergence is taken over the student's top-k tokens at each position")
    num_generations: int = setting(8, help="samples per prompt; batch_size x grad_accum must be a multiple")
    temperature: float = setting(1.0, help="sampling temperature, also applied to the logits in the loss")
    max_completion_length: int = setting(256, help="tokens per sample")

    def __post_init__(self):
        if self.teacher not in ONPOLICY_TEACHERS:
            raise ConfigError(f"onpolicy.teacher: '{self.teacher}' is not one of {', '.join(ONPOLICY_TEACHERS)}")
        for name in ("topk", "num_generations", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"onpolicy.{name}: must be a positive integer, got {getattr(self, name)!r}")
        if not self.temperature > 0:
            raise ConfigError(f"onpolicy.temperature: must be above 0 (it divides the logits), got {self.temperature!r}")

    def check_with(self, cfg: TrainConfig) -> None:
        """Refuse train settings TRL would reject with these, before any model is loaded."""
        if (cfg.batch_size * cfg.grad_accum) % self.num_generations:
            raise ConfigError(f"onpolicy.num_generations ({self.num_generations}) must divide train.batch_size x "
                              f"train.grad_accum ({cfg.batch_size} x {cfg.grad_accum}): each step trains on whole "
                              "groups of samples of the same prompts")
        if self.max_completion_length >= cfg.max_length:
            raise ConfigError(f"onpolicy.max_completion_length ({self.max_completion_length}) leaves no room for a "
                              f"prompt within train.max_length ({cfg.max_length})")


# A 7B model's chain-of-thought takes a few hundred tokens; 256 cut many GSM8K answers off before the
# final number. HumanEval replies carry whole functions, often with an explanation around them.
DEFAULT_MAX_NEW_TOKENS = 512
SUITE_MAX_NEW_TOKENS = {"humaneval": 1024}


@dataclass
class EvalConfig:
    suites: list[str] = setting(factory=lambda: ["math", "safety", "gap", "retention"],
                                help="comma-separated: math, function, humaneval, safety, helpfulness, "
                                "knowledge, gap, retention, lm_eval")
    limit: int | None = setting(None, help="examples per suite")
    batch_size: int = setting(32, help="prompts decoded together")
    max_new_tokens: int | None = setting(None, help="reply length limit (default: 512, 1024 for humaneval)")
    math_data: str | None = setting(None, help="math suite data (default: the built-in arithmetic test split)")
    function_data: str | None = setting(None, help="function-call suite data")
    safety_data: str | None = setting(None, help="harmful prompts (default: the built-in probe set)")
    knowledge_data: str | None = setting(None, help="multiple-choice questions: a file or hub dataset in "
                                         "allenai/ai2_arc's layout, e.g. ARC-Easy (default: the built-in 60)")
    ifeval_data: str | None = setting(None, help="IFEval prompts: a JSONL in google/IFEval's layout, or the hub's "
                                      "google/IFEval (default)")
    curve_limit: int = setting(128, help="prompts per curve metric (task score, KL from the seed on general and "
                               "on task prompts, knowledge questions when the knowledge suite runs); 0: no curve")
    curve_task_limit: int = setting(0, help="curve: prompts for the task score alone (0: curve_limit); the score "
                                    "is 0/1 per prompt, so where to read it off the curve is its noisiest part")
    curve_task_data: str | None = setting(None, help="curve: the task score's prompts and references (default: the "
                                          "task suite's data; 'training': data.source); rows whose prompt is a "
                                          "training row's are left out, so the training file gives held-out rows")
    curve_max_new_tokens: int = setting(128, help="curve: reply length of the task score's greedy replies and of "
                                        "the seed's sampled replies the KL is measured on")
    helpfulness_data: str | None = setting(None, help="instructions for the helpfulness suite: a file, a hub "
                                           "dataset, or alpaca_eval (default: built-in everyday instructions)")
    lm_eval_tasks: list[str] = setting(factory=list, help="harness tasks for the lm_eval suite, e.g. arc,mmlu")
    humaneval_predictions: str | None = setting(None, help="humaneval: grade this JSONL of {task_id, "
                                                "completion} made elsewhere instead of a model's replies")

    def for_suite(self, suite: str) -> "EvalConfig":
        """This config with max_new_tokens settled for `suite`: the user's value, else the suite's default."""
        if self.max_new_tokens is not None:
            return self
        return dataclasses.replace(self, max_new_tokens=SUITE_MAX_NEW_TOKENS.get(suite, DEFAULT_MAX_NEW_TOKENS))


@dataclass
class GenerateConfig:
    """`sdft generate`: greedy replies to a dataset's prompts."""

    batch_size: int = setting(32, help="prompts decoded together")
    max_new_tokens: int = setting(512, help="reply length limit")
    system: str | None = setting(None, help="system prompt")


@dataclass
class RunConfig:
    model: ModelSpec = setting(factory=ModelSpec)
    data: DataConfig = setting(factory=DataConfig)
    distill: DistillConfig = setting(factory=DistillConfig)
    train: TrainConfig = setting(factory=TrainConfig)
    eval: EvalConfig = setting(factory=EvalConfig)
    generate: GenerateConfig = setting(factory=GenerateConfig)
    seeds: list[int] = setting(factory=lambda: [42], help="training seeds, e.g. 1,2,3")
    methods: list[str] = setting(factory=lambda: ["sft", "sdft"], help="what `sdft run` trains and compares: "
                                 + ", ".join(METHODS))
    onpolicy: OnPolicyConfig = setting(factory=OnPolicyConfig)

    def __post_init__(self):
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ConfigError(f"methods must be a list of {', '.join(METHODS)}; got {self.methods!r}")
        if "onpolicy" in self.methods:
            self.onpolicy.check_with(self.train)

    def to_dict(self) -> dict:
        return asdict(self)


# --- reading values into the fields' types -------------------------------------------------------


def type_name(hint) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def convert(value, hint, key: str):
    """`value` (from YAML, a flag or `key=value`) as type `hint`; ConfigError naming `key` otherwise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if len(options) < len(args):
                return None
        # The option the value already is comes first (a list-or-string field keeps a string a string)
        for option in sorted(options, key=lambda o: not isinstance(value, typing.get_origin(o) or o)):
            try:
                return convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {type_name(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return build(hint, value if value is not None else {}, key)
    if origin is list:
        (item,) = args
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {type_name(item)}, got {value!r}")
        return [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            pairs = [p for p in value.split(",") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ConfigError(f"{key}: expected name=value pairs separated by commas, got {value!r}")
            value = dict(p.split("=", 1) for p in pairs)
            value = {k.strip(): v.strip() for k, v in value.items()}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected bool (true or false), got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # YAML 1.1 reads 1e-3 as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected float, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a revision or a name that YAML read as a number
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: cannot read a value of type {type_name(hint)}")


def build(cls, values: dict, where: str):
    """An instance of dataclass `cls` from a mapping, every value converted to its field's type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    prefix = f"{where}." if where else ""
    return cls(**{name: convert(value, hints[name], f"{prefix}{name}") for name, value in values.items()})


def preset_path(name: str) -> Path:
    folder = Path(str(resources.files("sdft") / "recipes"))
    path = folder / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"no preset '{name}'; available: {', '.join(available)}")
    return path


def read_yaml(path: str | Path) -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    return values


def apply_override(values: dict, item: str) -> None:
    """Set `section.key=value` (value read as YAML) in the nested mapping `values`."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}' must look like section.key=value")
    node = values
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        node[parts[-1]] = raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults), then apply `section.key=value` overrides; every value is
    converted to its field's type."""
    values = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        apply_override(values, item)
    try:
        return build(RunConfig, values, "")
    except ConfigError as e:
        raise (ConfigError(f"{path}: {e}") if path is not None else e) from None
