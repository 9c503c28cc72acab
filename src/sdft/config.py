"""One config drives a run: YAML file -> nested dataclasses, overridden by flags (`--set a.b=value`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from sdft.distill.stage import DistillConfig
from sdft.errors import InputError
from sdft.models import ModelSpec
from sdft.train.onpolicy import OnPolicyConfig
from sdft.train.trainer import TrainConfig


@dataclass
class DataConfig:
    source: str = "builtin:arithmetic"
    task: str = "math"  # math | function | code | general
    columns: dict[str, str] | None = None
    limit: int | None = None


@dataclass
class EvalConfig:
    suites: list[str] = field(default_factory=lambda: ["math", "safety", "gap", "retention"])
    limit: int | None = None  # examples per suite
    batch_size: int = 32
    # None: a length that fits each suite's replies (DEFAULT_MAX_NEW_TOKENS, SUITE_MAX_NEW_TOKENS)
    max_new_tokens: int | None = None
    math_data: str | None = None  # None: the built-in arithmetic test split
    function_data: str | None = None
    safety_data: str | None = None  # None: the built-in probe set
    knowledge_data: str | None = None
    # Instructions for the helpfulness suite: a local file, a hub dataset, or "alpaca_eval" (AlpacaEval's 805,
    # from the hub); None: the built-in everyday instructions. Its outputs file is scoreable by alpaca_eval.
    helpfulness_data: str | None = None
    lm_eval_tasks: list[str] = field(default_factory=list)  # for the lm_eval suite, e.g. [arc, mmlu]
    # JSONL of {task_id, completion} made elsewhere: the humaneval suite grades these and loads no model.
    humaneval_predictions: str | None = None

    def for_suite(self, suite: str) -> "EvalConfig":
        """This config with max_new_tokens settled for `suite`: the user's value, else the suite's default."""
        if self.max_new_tokens is not None:
            return self
        return dataclasses.replace(self, max_new_tokens=SUITE_MAX_NEW_TOKENS.get(suite, DEFAULT_MAX_NEW_TOKENS))


# A 7B model's chain-of-thought takes a few hundred tokens; 256 cut many GSM8K answers off before the
# final number. HumanEval replies carry whole functions, often with an explanation around them.
DEFAULT_MAX_NEW_TOKENS = 512
SUITE_MAX_NEW_TOKENS = {"humaneval": 1024}


@dataclass
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seeds: list[int] = field(default_factory=lambda: [42])
    # What `sdft run` trains and compares, all with the train settings above: sft, sdft, onpolicy
    methods: list[str] = field(default_factory=lambda: ["sft", "sdft"])
    onpolicy: OnPolicyConfig = field(default_factory=OnPolicyConfig)  # settings of the onpolicy method only

    def to_dict(self) -> dict:
        return asdict(self)


class ConfigError(InputError):
    pass


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def preset_path(name: str) -> Path:
    path = Path(str(resources.files("sdft") / "recipes" / f"{name}.yaml"))
    if not path.is_file():
        available = sorted(p.stem for p in Path(str(resources.files("sdft") / "recipes")).glob("*.yaml"))
        raise ConfigError(f"no preset '{name}'; available: {', '.join(available)}")
    return path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults), then apply `section.key=value` overrides (values parsed as YAML)."""
    values: dict = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    cfg = _build(RunConfig, values, str(path) if path else "config")
    from sdft.recipes.sdft_run import METHODS

    if not isinstance(cfg.methods, list) or not cfg.methods or any(m not in METHODS for m in cfg.methods):
        raise ConfigError(f"{path or 'config'}: methods must be a list of {', '.join(METHODS)}; got {cfg.methods!r}")
    return cfg
