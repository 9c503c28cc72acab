"""The Python API (sdft.api): sdft.distill returns the distilled set as a datasets.Dataset, and
sdft.evaluate the metrics, through the same stages and checks as the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sdft
from sdft.core.config import ConfigError

PROVENANCE = {"id", "prompt", "original", "distilled", "response", "accepted", "status", "reject_reason",
              "kept_kind", "template"}


def test_importing_sdft_stays_light_and_the_packages_stay_packages():
    code = ("import sys, sdft; print(json.dumps([m for m in ('torch', 'transformers', 'datasets', 'sdft.api') "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    import sdft.distill.stage

    assert callable(sdft.distill) and callable(sdft.evaluate)
    assert sdft.distill.stage.distill is not None  # the subpackage is still the package


def test_distill_returns_a_dataset_with_provenance(tiny_model, tmp_path):
    from datasets import Dataset

    out = tmp_path / "distilled.jsonl"
    ds = sdft.distill(tiny_model, "builtin:arithmetic?n=4", task="math", out=out, max_new_tokens=8, batch_size=4,
                      progress=False)
    assert isinstance(ds, Dataset) and ds.num_rows == 4
    assert PROVENANCE <= set(ds.column_names)
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # the same file `sdft distill` writes
    assert ds.to_list() == [{c: r.get(c) for c in ds.column_names} for r in rows]
    assert set(ds["status"]) <= {"accepted", "accepted_unverified", "rejected"}
    # responses are the kept rewrite or, where it was rejected, the original
    assert all(r["response"] == (r["distilled"] if r["accepted"] else r["original"]) for r in ds)

    # The stage is resumable and keyed: the same call returns the finished file without decoding again.
    summary = out.with_name(out.name + ".summary.json")
    before = summary.stat().st_mtime_ns
    again = sdft.distill(tiny_model, "builtin:arithmetic?n=4", task="math", out=out, max_new_tokens=8, batch_size=4,
                         progress=False)
    assert again.to_list() == ds.to_list() and summary.stat().st_mtime_ns == before


def test_bad_settings_fail_before_any_model_loads(no_model, tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'candidate'"):
        sdft.distill("default", "builtin:arithmetic?n=4", task="math", out=tmp_path / "d.jsonl", candidate=4)
    with pytest.raises(ConfigError, match="distill.candidates: expected int"):
        sdft.distill("default", "builtin:arithmetic?n=4", task="math", out=tmp_path / "d.jsonl", candidates="many")
    with pytest.raises(ConfigError, match="data.task"):
        sdft.distill("default", "builtin:arithmetic?n=4", task="poetry", out=tmp_path / "d.jsonl")
    assert not (tmp_path / "d.jsonl").exists()


def test_evaluate_returns_the_metrics(tiny_model, tmp_path):
    metrics = sdft.evaluate(tiny_model, suites="math", limit=2, max_new_tokens=4, out=tmp_path / "eval",
                            progress=False)
    written = json.loads((tmp_path / "eval" / "math" / "metrics.json").read_text())
    assert set(metrics) == {"math"} and metrics["math"] == {e["name"]: e for e in written}
    assert metrics["math"]["accuracy"]["n"] == 2
