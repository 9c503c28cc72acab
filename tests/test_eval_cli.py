"""Exit codes and messages of `sdft eval` (and the CLI's split between bad input and internal errors)."""

import json

from sdft.cli import main


def test_retention_of_an_adapter_without_seed_dir_exits_2_naming_the_flag(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    out = tmp_path / "eval"
    rc = main(["eval", "--model", "no-such/model", "--adapter", str(adapter), "--suite", "retention",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--seed-dir" in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_a_plain_error_inside_is_an_internal_error_with_traceback(tmp_path, monkeypatch, capsys):
    # A ValueError raised inside sdft or a library is a bug, not the user's input: exit 1 and show where.
    import sdft.evaluate.suites

    def broken(*args, **kwargs):
        raise ValueError("something inside went wrong")

    monkeypatch.setattr(sdft.evaluate.suites, "run_suites", broken)
    rc = main(["eval", "--model", "no-such/model", "--suite", "math", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err and "internal error" in err and "something inside went wrong" in err


def test_bad_input_stays_exit_2_in_one_line(tmp_path, capsys):
    rc = main(["eval", "--model", "no-such/model", "--suite", "nope", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "valid suites" in err and "Traceback" not in err


def test_changing_limit_between_two_evals_into_one_folder_redoes_the_suite(tiny_model, tmp_path, capsys):
    out = tmp_path / "eval"
    common = ["eval", "--model", tiny_model, "--suite", "math", "--out", str(out), "--max-new-tokens", "4"]
    assert main(common + ["--limit", "3"]) == 0
    assert json.loads((out / "math" / "metrics.json").read_text())[0]["n"] == 3
    assert main(common + ["--limit", "2"]) == 0
    assert "limit: 3 -> 2" in capsys.readouterr().out
    assert json.loads((out / "math" / "metrics.json").read_text())[0]["n"] == 2
    settings = json.loads((out / "math" / "settings.json").read_text())
    assert settings["settings"]["limit"] == 2
