"""Standard benchmarks through EleutherAI's lm-evaluation-harness, for runs that want paper numbers.

Optional (`pip install 'sdft[lm-eval]'`), run by the `lm_eval` suite (sdft.evaluate.suite_lm_eval): the
harness downloads its datasets from the hub, while the built-in knowledge suite works offline.
"""

from __future__ import annotations

from sdft.core.errors import SetupError
from sdft.core.models import resolve_model

# Short names -> harness task names (truthfulqa's multiple-choice variant; ARC's challenge set).
LM_EVAL_TASKS = {
    "mmlu": "mmlu",
    "truthfulqa": "truthfulqa_mc2",
    "arc": "arc_challenge",
    "hellaswag": "hellaswag",
    "winogrande": "winogrande",
}


def run_lm_eval(model_path: str, tasks: list[str] | tuple[str, ...] = tuple(LM_EVAL_TASKS), adapter: str | None = None,
                batch_size: int | str = "auto", limit: int | float | None = None, device: str | None = None,
                dtype: str = "auto", num_fewshot: int | None = None, revision: str | None = None) -> dict:
    """Run harness tasks on a model (name, folder or "default"), optionally with a PEFT adapter.

    Returns the harness's output without per-sample logs: "results" ({task: {"metric,filter": value}})
    and "n-samples" ({task: {"original", "effective"}}).
    """
    try:
        import lm_eval
    except ImportError as e:
        raise SetupError("run_lm_eval needs EleutherAI's lm-evaluation-harness: pip install 'sdft[lm-eval]'") from e
    model_args = f"pretrained={resolve_model(model_path)},dtype={dtype}"
    if revision:
        model_args += f",revision={revision}"
    if adapter:
        model_args += f",peft={adapter}"
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[LM_EVAL_TASKS.get(t, t) for t in tasks],
        batch_size=batch_size,
        limit=limit,
        device=device,
        num_fewshot=num_fewshot,
    )
    return {"results": results["results"], "n-samples": results.get("n-samples", {})}
