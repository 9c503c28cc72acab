"""Settings (sdft.core.config): every value from YAML, a flag or `--set` is converted to its field's type,
and a value that cannot be is an error naming the key and the type, before any model loads."""

import dataclasses
import json
import typing

import pytest

from sdft.cli import FLAGS, build_parser, default_text, flag_name, main, section_class
from sdft.core.config import ConfigError, RunConfig, TrainConfig, convert, load_config


@pytest.mark.parametrize("raw,hint,expected", [
    ("1e-3", float, 0.001), (3, float, 3.0), ("16", int, 16), (16.0, int, 16), ("true", bool, True),
    ("no", bool, False), ("null", int | None, None), ("7", int | None, 7), ("1,2,3", list[int], [1, 2, 3]),
    ("all-linear", list[str] | str, "all-linear"), (["q_proj"], list[str] | str, ["q_proj"]),
    ("prompt=q,response=a", dict[str, str] | None, {"prompt": "q", "response": "a"}), (1234, str, "1234"),
])
def test_values_are_read_into_their_fields_types(raw, hint, expected):
    value = convert(raw, hint, "key")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("raw,hint,words", [
    ("abc", int, "expected int"), ("1.5", int, "expected int"), (True, int, "expected int"),
    ("fast", float, "expected float"), ("maybe", bool, "expected bool"), ({"a": 1}, str, "expected str"),
    ("x", list[int], "expected int"),
])
def test_a_value_of_the_wrong_type_is_an_error_naming_key_and_type(raw, hint, words):
    with pytest.raises(ConfigError, match=f"train.lora_r.*{words}"):
        convert(raw, hint, "train.lora_r")


def test_yaml_and_overrides_are_converted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-3\n  lora_r: '16'\nseeds: [1, 2]\n")  # YAML reads 1e-3 as a string
    cfg = load_config(path, ["eval.suites=math,gap", "model.revision=1234"])
    assert cfg.train.learning_rate == 0.001 and cfg.train.lora_r == 16 and cfg.seeds == [1, 2]
    assert cfg.eval.suites == ["math", "gap"] and cfg.model.revision == "1234"
    path.write_text("train:\n  lora_r: abc\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lora_r: expected int, got 'abc'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lora_rank'\]"):
        load_config(None, ["train.lora_rank=4"])


def test_every_flag_states_its_fields_default():
    """Flags are made from the fields: each help shows the dataclass default, and no setting is missed."""
    parsers = build_parser()._subparsers._group_actions[0].choices
    for command, sections in FLAGS.items():
        text = " ".join(parsers[command].format_help().split())
        for section, names, style in sections:
            cls = section_class(section)
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if (names is None or f.name in names) and not dataclasses.is_dataclass(hints[f.name]):
                    flag = flag_name(section, f.name, style)
                    assert flag in text, (command, flag)
                    assert f"(default: {default_text(f)})" in text, (command, flag)
    assert "(default: 0.0001)" in " ".join(parsers["train"].format_help().split())  # learning_rate




@pytest.mark.parametrize("how", ["set", "config", "flag"])
def test_bad_value_exits_2_naming_key_and_type_before_any_model_loads(how, tmp_path, capsys, no_model):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    common = ["train", "--data", str(data), "--out", str(tmp_path / "out")]
    if how == "set":
        args = [*common, "--set", "lora_r=abc"]
    elif how == "flag":
        args = [*common, "--lora-r", "abc"]
    else:
        (tmp_path / "c.yaml").write_text("train:\n  lora_r: abc\n")
        args = [*common, "--config", str(tmp_path / "c.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lora_r: expected int, got 'abc'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["set", "config"])
def test_learning_rate_1e_3_trains_with_0_001(how, tiny_model, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "out"
    args = ["train", "--model", tiny_model, "--data", str(data), "--out", str(out), "--max-steps", "1",
            "--batch-size", "2"]
    if how == "set":
        args += ["--set", "learning_rate=1e-3"]
    else:
        (tmp_path / "c.yaml").write_text("train:\n  learning_rate: 1e-3\n")
        args += ["--config", str(tmp_path / "c.yaml")]
    assert main(args) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["config"]["learning_rate"] == 0.001
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("learning_rate") for r in log)  # the optimizer saw a number and stepped


def test_run_config_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.train == TrainConfig() and cfg.methods == ["sft", "sdft"]
