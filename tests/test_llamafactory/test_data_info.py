import json
import os

import pytest

from semievol_lf.cli import main as cli
from semievol_lf.errors import UserError
from semievol_lf.llamafactory.dataset_info import absolutise, merge_into


def test_merge_keeps_existing_entries_refuses_conflicts_and_backs_up(tmp_path):
    target = tmp_path / "dataset_info.json"
    existing = {"alpaca_en": {"file_name": "alpaca_en.json"}, "mine": {"file_name": "mine.json"}}
    target.write_text(json.dumps(existing))
    merge_into(target, {"demo_labeled": {"file_name": "/abs/labeled.json"}})
    merged = json.loads(target.read_text())
    assert merged["alpaca_en"] == existing["alpaca_en"] and merged["mine"] == existing["mine"]
    assert merged["demo_labeled"] == {"file_name": "/abs/labeled.json"}
    assert json.loads((tmp_path / "dataset_info.json.bak").read_text()) == existing

    with pytest.raises(UserError, match="entry mine already exist"):
        merge_into(target, {"mine": {"file_name": "other.json"}})
    assert json.loads(target.read_text()) == merged  # untouched after the refusal
    merge_into(target, {"mine": {"file_name": "other.json"}}, force=True)
    assert json.loads(target.read_text())["mine"] == {"file_name": "other.json"}
    assert merge_into(target, {"mine": {"file_name": "other.json"}}, force=False) == []  # same entry: no-op


def test_absolutise_resolves_against_the_source_folder(tmp_path):
    out = absolutise({"a": {"file_name": "../data/demo/labeled.json"}}, tmp_path / "data_info")
    assert out["a"]["file_name"] == str((tmp_path / "data" / "demo" / "labeled.json").resolve())


def test_cli_merge_into_another_setup(tmp_path, capsys):
    target = tmp_path / "LLaMA-Factory" / "data"
    target.mkdir(parents=True)
    (target / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    cli(["data-info", "merge", "--into", str(target)])
    merged = json.loads((target / "dataset_info.json").read_text())
    assert "identity" in merged and "mmlu_labeled" in merged
    assert os.path.isabs(merged["mmlu_labeled"]["file_name"])
    assert merged["mmlu_labeled"]["file_name"].endswith("data/mmlu/labeled.json")
    assert "merged" in capsys.readouterr().out


def test_corrupt_target_is_reported_not_overwritten(tmp_path):
    target = tmp_path / "dataset_info.json"
    target.write_text("{not json")
    with pytest.raises(UserError, match="dataset_info.json:1: not valid JSON"):
        merge_into(target, {"a": {"file_name": "x"}})
    assert target.read_text() == "{not json"


def test_cli_missing_source_is_an_error_and_the_target_is_untouched(tmp_path, capsys):
    target = tmp_path / "dataset_info.json"
    target.write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    with pytest.raises(SystemExit) as stop:
        cli(["data-info", "merge", "--from", str(tmp_path / "missing.json"), "--into", str(target)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --from {tmp_path / 'missing.json'}: no such file") and err.count("\n") == 1
    assert json.loads(target.read_text()) == {"identity": {"file_name": "identity.json"}}
    assert not (tmp_path / "dataset_info.json.bak").exists()
