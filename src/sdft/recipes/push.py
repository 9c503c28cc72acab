"""`sdft push`: one trained adapter of a run folder on the Hugging Face Hub, with a model card.

The folder uploaded holds the adapter (loadable with `PeftModel.from_pretrained(base, repo)`), the run's
report.html, and README.md: a model card made with huggingface_hub's ModelCard. Its YAML metadata names
the base model, `library_name: peft`, the tags, the training dataset where it is a hub dataset, and the
pushed model's measured metrics in the Hub's model-index form (from its eval metrics.json files); its
text says what the run compared (the seed model, SFT and SDFT trained alike) with each one's numbers,
gives the verdict and links the report.

The folder is built under `<run>/push/<method>-seed-N/`; `dry_run` stops there. The upload is
huggingface_hub's create_repo and upload_folder, with the user's token (HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from sdft.core.config import DEFAULT_MODEL, METHODS
from sdft.core.errors import InputError, SetupError
from sdft.core.layout import SEED_ROW, eval_dir, seed_dirs, seed_of, train_dir
from sdft.recipes.tracking import verdict_lines

# The embedded default model is a quantised copy of this hub model (sdft.core.models)
DEFAULT_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
METHOD_TEXT = {
    "sft": "SFT: LoRA fine-tuning on the reference responses",
    "sdft": "SDFT: LoRA fine-tuning on the seed model's own rewrites of the reference responses "
            "(Self-Distillation Fine-Tuning, Yang et al., ACL 2024), each checked and kept only if it "
            "says what the reference says",
    "onpolicy": "on-policy self-distillation: LoRA trained on the model's own samples towards itself "
                "reading the reference",
}
# Where a suite's eval data comes from (an EvalConfig field); unlisted suites use built-in sets.
SUITE_DATA = {"math": "math_data", "function": "function_data", "safety": "safety_data",
              "knowledge": "knowledge_data", "helpfulness": "helpfulness_data"}
SUITE_HUB_DATA = {"humaneval": "openai/openai_humaneval"}
CARD_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}\n"


def hub_id(source: str | None) -> str | None:
    """The hub id in a model or data source (`owner/name`, `hf:owner/name:config:split`); None for local
    files and folders, built-in sets and the embedded model."""
    if not source or Path(source).exists():
        return None
    name = source.removeprefix("hf:").split(":", 1)[0]
    return name if HUB_ID.match(name) else None


def base_model_id(model_name: str) -> str | None:
    return DEFAULT_BASE if model_name == DEFAULT_MODEL else hub_id(model_name)


def choose_seed(run: Path, method: str, seed: int | None) -> int:
    """The training seed to push: the one given, or the only one the method was trained with."""
    trained = [seed_of(d) for d in seed_dirs(train_dir(run, method))]
    if seed is not None:
        return seed
    if not trained:
        found = {m: [seed_of(d) for d in seed_dirs(train_dir(run, m))] for m in METHODS}
        have = "; ".join(f"{m} seeds {', '.join(map(str, s))}" for m, s in found.items() if s) or "nothing"
        raise InputError(f"{run}: no {method} model trained here (train/{method}/seed-N); trained: {have}")
    if len(trained) > 1:
        raise InputError(f"{run}: {method} was trained with seeds {', '.join(map(str, trained))}; choose one "
                         "with --seed N")
    return trained[0]


def adapter_folder(run: Path, method: str, seed: int) -> Path:
    adapter = train_dir(run, method, seed) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        trained = [seed_of(d) for d in seed_dirs(train_dir(run, method))
                   if (d / "adapter" / "adapter_config.json").is_file()]
        have = f"trained {method} seeds: {', '.join(map(str, trained))}" if trained else f"no {method} adapter"
        raise InputError(f"{adapter}: no adapter there (adapter_config.json is missing); {have}")
    return adapter


def run_config(run: Path) -> dict:
    try:
        values = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as e:
        raise InputError(f"{run / 'config.yaml'}: invalid YAML: {e}") from None
    return values if isinstance(values, dict) else {}


def metric_entries(eval_folder: Path) -> list[dict]:
    """metrics.json entries with a number, suites in folder order."""
    entries = []
    for path in sorted(eval_folder.glob("*/metrics.json")):
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entries += [dict(e, suite=path.parent.name) for e in found if isinstance(e, dict)
                    and isinstance(e.get("value"), (int, float)) and not isinstance(e.get("value"), bool)]
    return entries


def suite_dataset(suite: str, eval_cfg: dict) -> tuple[str, str]:
    """(dataset type, dataset name) of a suite's eval data for the model-index: a hub id where there is
    one, else the suite's name; the name says which data it was (file names only, never paths)."""
    if suite in SUITE_HUB_DATA:
        return SUITE_HUB_DATA[suite], suite
    source = eval_cfg.get(SUITE_DATA.get(suite, ""))
    if suite == "gap":
        source = None  # the training data, described in the card's text
    found = hub_id(source)
    if found:
        return found, f"{suite}: {found}"
    if source:
        return suite, f"{suite}: {Path(source).name}"
    return suite, f"{suite}: sdft's built-in set"


def eval_results(entries: list[dict], eval_cfg: dict) -> list:
    from huggingface_hub import EvalResult

    results = []
    for e in entries:
        dataset_type, dataset_name = suite_dataset(e["suite"], eval_cfg)
        results.append(EvalResult(task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset_name,
                                  metric_type=str(e["name"]), metric_value=round(float(e["value"]), 6),
                                  metric_name=f"{e['suite']} {e['name']}"))
    return results


def fmt(entry: dict | None) -> str:
    if entry is None:
        return "-"
    low, high = entry.get("low"), entry.get("high")
    interval = f" [{low:.4g}, {high:.4g}]" if isinstance(low, (int, float)) and isinstance(high, (int, float)) else ""
    return f"{entry['value']:.4g}{interval}"


def comparison_table(run: Path, seed: int, methods: list[str]) -> str:
    """Markdown: one row per model (the seed, then each method at this training seed), one column per metric."""
    from sdft.report.build import label

    rows = [(label(SEED_ROW), metric_entries(eval_dir(run, SEED_ROW)))]
    rows += [(f"{label(m)} (seed {seed})", metric_entries(eval_dir(run, m, seed))) for m in methods]
    columns = list(dict.fromkeys((e["suite"], e["name"]) for _, entries in rows for e in entries))
    if not columns:
        return "No evaluation results were found in the run folder."
    lines = ["| model | " + " | ".join(f"{s} {n}" for s, n in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name, entries in rows:
        by = {(e["suite"], e["name"]): e for e in entries}
        lines.append(f"| {name} | " + " | ".join(fmt(by.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def and_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def card_body(run: Path, repo: str, method: str, seed: int, cfg: dict, base: str | None) -> str:
    from sdft.report.build import label

    model_name = str((cfg.get("model") or {}).get("name", DEFAULT_MODEL))
    data = cfg.get("data") or {}
    source = data.get("source")
    methods = [m for m in (cfg.get("methods") or ["sft", "sdft"]) if m in METHODS] or [method]
    summary_file = train_dir(run, method, seed) / "train_summary.json"
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    data_text = hub_id(source) or (source if str(source or "").startswith("builtin:") else
                                   Path(str(source)).name if source else "unknown data")
    base_text = f"[{base}](https://huggingface.co/{base})" if base else f"a local model (`{Path(model_name).name}`)"
    trained = f"{summary['steps']} optimizer steps on {summary['rows']} rows" if "steps" in summary else "LoRA"
    verdict = verdict_lines(run)
    parts = [
        f"# {repo.split('/')[-1]}",
        f"A LoRA adapter for {base_text}, trained with sdft by {METHOD_TEXT.get(method, method)}.",
        f"Training: {trained} of `{data_text}` (task `{data.get('task', 'math')}`), training seed {seed}.",
        "## What was compared",
        f"The run trained {and_list([label(m) for m in methods])} with the same LoRA settings, seeds and prompts, "
        "and evaluated each of them and the seed model (the base model without an adapter) on the same suites. "
        f"This repository holds the {label(method)} adapter of training seed {seed}. Measured (95% interval):",
        comparison_table(run, seed, methods),
    ]
    if verdict:
        parts += ["Verdict, prompt by prompt against SFT:", "\n".join(f"- {line}" for line in verdict)]
    parts += [
        "The full report (every metric with its interval, the distillation's acceptance, training curves and "
        "figures) is [report.html](report.html).",
        "## Use",
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        f"base = AutoModelForCausalLM.from_pretrained(\"{base or model_name}\")\n"
        f"model = PeftModel.from_pretrained(base, \"{repo}\")\n```",
    ]
    return "\n\n".join(parts)


def build_card(run: Path, repo: str, method: str, seed: int):
    """The model card (huggingface_hub.ModelCard) of `method` at training `seed` of the run."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg = run_config(run)
    model_name = str((cfg.get("model") or {}).get("name", DEFAULT_MODEL))
    source = (cfg.get("data") or {}).get("source")
    base = base_model_id(model_name)
    dataset = hub_id(source)
    results = eval_results(metric_entries(eval_dir(run, method, seed)), cfg.get("eval") or {})
    data = ModelCardData(
        base_model=base, library_name="peft", model_name=repo, datasets=[dataset] if dataset else None,
        tags=["sdft", "self-distillation", method, "lora", "peft"], pipeline_tag="text-generation",
        eval_results=results or None,
    )
    return ModelCard.from_template(data, template_str=CARD_TEMPLATE,
                                   body=card_body(run, repo, method, seed, cfg, base))


def build_folder(run: Path, repo: str, method: str, seed: int, folder: Path) -> Path:
    """Write the repository's files into `folder` (emptied first): adapter, report.html, README.md."""
    adapter = adapter_folder(run, method, seed)
    report = run / "report.html"
    if not report.is_file():
        raise InputError(f"{report}: no report in the run folder; write it first with `sdft report {run}`")
    card = build_card(run, repo, method, seed)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in adapter.iterdir():
        if f.is_file() and f.name != "README.md":  # PEFT's own placeholder card gives way to ours
            shutil.copy2(f, folder / f.name)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    # Training recorded where the base model was on this machine; users load it from the hub.
    base = base_model_id(str((run_config(run).get("model") or {}).get("name", DEFAULT_MODEL)))
    config["base_model_name_or_path"] = base or Path(str(config.get("base_model_name_or_path") or "")).name
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shutil.copy2(report, folder / "report.html")
    card.save(folder / "README.md")
    return folder


def push(run_dir: str | Path, repo: str, method: str = "sdft", seed: int | None = None, private: bool = False,
         dry_run: bool = False) -> Path:
    """Build the folder for `method` at training `seed` of the run and, unless `dry_run`, upload it to the
    hub model repository `repo` (created if needed). Returns the folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: no run folder there")
    if method not in METHODS:
        raise InputError(f"--method {method}: not one of {', '.join(METHODS)}")
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise InputError(f"--repo {repo}: not a hub repository id (owner/name): {e}") from None
    seed = choose_seed(run, method, seed)
    folder = build_folder(run, repo, method, seed, run / "push" / f"{method}-seed-{seed}")
    if dry_run:
        print(f"dry run: built {folder} (README.md, report.html, the {method} seed {seed} adapter); nothing uploaded")
        return folder
    upload(folder, repo, private, f"sdft: {method} adapter, training seed {seed}")
    return folder


def upload(folder: Path, repo: str, private: bool, message: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo, folder_path=folder, repo_type="model", commit_message=message)
    except HfHubHTTPError as e:
        raise SetupError(f"upload to {repo} failed: {e}") from None
    print(f"pushed {folder} -> {url}")
