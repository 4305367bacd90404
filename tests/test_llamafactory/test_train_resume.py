"""A fine-tune killed after a checkpoint resumes from it (real LlamaFactory on the tiny model) and ends
where an uninterrupted fine-tune ends; checkpoints of other inputs are never resumed from; keys that
only decide logging and saving change neither."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_sandbox

from semievol_lf import children
from semievol_lf.io_utils import file_digest
from semievol_lf.llamafactory import launcher
from semievol_lf.llamafactory.recipes import train_recipe
from semievol_lf.models.presets import get_preset

pytestmark = pytest.mark.slow
STEPS_PER_EPOCH = 4  # 30 labeled examples, batch 8


def recipe_for(box: Path, out: Path, **overrides) -> dict:
    recipe = train_recipe("demo", get_preset("tiny"), "warmup")
    recipe.update(model_name_or_path=str(box / ".cache" / "tiny-llama"), dataset_dir=str(box / "data_info"),
                  output_dir=str(out), num_train_epochs=10.0, save_steps=4, logging_steps=1)
    recipe.update(overrides)
    return recipe


def final_loss(out: Path) -> tuple[int, float]:
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    return last["current_steps"], last["loss"]


def train_killed_at_step(recipe: dict, box: Path, name: str, step: int) -> subprocess.CompletedProcess:
    """`launcher.train` in a child whose trainer is SIGKILLed at `step`, the child with it (SEMIEVOL_FAULT)."""
    code = ("import json, sys; from pathlib import Path; from semievol_lf.llamafactory import launcher; "
            "launcher.train(sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), n_gpus=1)")
    return subprocess.run([sys.executable, "-c", code, name, json.dumps(recipe), str(box / f"{name}.yaml"),
                           str(box / f"{name}.log")], cwd=box, capture_output=True, text=True, check=False,
                          env={**os.environ, "SEMIEVOL_FAULT": f"train:{name}:{step}:sigkill"})


@pytest.fixture(scope="module")
def box(tmp_path_factory, tiny_model, demo_source) -> Path:
    return make_sandbox(tmp_path_factory.mktemp("resume"), tiny_model, demo_source)


def test_killed_fine_tune_resumes_from_its_last_checkpoint(box, capsys):
    ref = launcher.train("ref", recipe_for(box, box / "ref"), box / "ref.yaml", box / "ref.log", n_gpus=1)
    total, ref_loss = final_loss(ref)
    assert total == 10 * STEPS_PER_EPOCH
    capsys.readouterr()
    # Logging and saving at another pace does not change the weights: still finished.
    launcher.train("ref", recipe_for(box, ref, save_steps=7, save_total_limit=1, logging_steps=3, plot_loss=False),
                   box / "ref.yaml", box / "ref.log", n_gpus=1)
    assert f"ref: finished before, skipped ({ref})" in capsys.readouterr().out

    out = box / "killed"
    proc = train_killed_at_step(recipe_for(box, out), box, "killed", 2 * STEPS_PER_EPOCH + 2)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    checkpoint = launcher.last_checkpoint(out)  # saved every 4 steps: 4 and 8, not 10 (killed first)
    assert checkpoint == out / f"checkpoint-{2 * STEPS_PER_EPOCH}" and not (out / "semievol_step.json").exists()
    capsys.readouterr()

    # Resumed with checkpoints at another pace (as when a running experiment is given them): the same
    # inputs, so the checkpoint is taken up, and the end is the uninterrupted run's.
    resumed = recipe_for(box, out, save_steps=3, save_total_limit=1)
    launcher.train("killed", resumed, box / "killed.yaml", box / "killed.log", n_gpus=1)
    assert f"resuming from {checkpoint}" in capsys.readouterr().out
    assert "resume_from_checkpoint" in (box / "killed.yaml").read_text()
    steps, loss = final_loss(out)
    assert steps == total
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{total}"]  # save_total_limit 1
    assert loss == pytest.approx(ref_loss, rel=1e-3, abs=1e-4)
    # The resumed run's loss curve: LlamaFactory deletes trainer_log.jsonl when a trainer starts with
    # `overwrite_output_dir` (the recipes' setting), so the log starts after the checkpoint; the trainer state's
    # log_history, restored from the checkpoint, holds every step (what bench/real.py `read_loss` reads first).
    logged = [row["current_steps"] for row in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines())
              if "loss" in row]
    assert logged[0] == 2 * STEPS_PER_EPOCH + 1
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == list(range(1, total + 1))


def test_killed_after_its_last_checkpoint_resumes_to_the_same_weights_and_digest(box, capsys):
    """A kill after the end-of-training checkpoint, before the weights were saved: the resumed run
    trains no step and its adapter, weights and digest, is the uninterrupted one (the steps built on
    it keep their caches)."""
    out = box / "late"
    launcher.train("late", recipe_for(box, out, num_train_epochs=2.0), box / "late.yaml", box / "late.log", n_gpus=1)
    last = launcher.last_checkpoint(out)
    assert last == out / f"checkpoint-{2 * STEPS_PER_EPOCH}"  # saved at the end whatever save_steps says
    weights, digest = (out / "adapter_model.safetensors").read_bytes(), file_digest(out)
    for f in ("adapter_model.safetensors", "adapter_config.json", "training_args.bin", "semievol_step.json"):
        (out / f).unlink()
    capsys.readouterr()
    launcher.train("late", recipe_for(box, out, num_train_epochs=2.0), box / "late.yaml", box / "late.log", n_gpus=1)
    assert f"resuming from {last}" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    assert file_digest(out) == digest


def test_checkpoints_of_other_inputs_are_not_resumed_from(box, capsys):
    out = box / "other"
    launcher.train("a", recipe_for(box, out, num_train_epochs=2.0), box / "a.yaml", box / "a.log", n_gpus=1)
    assert launcher.last_checkpoint(out) is not None
    (out / "semievol_step.json").unlink()  # as if it had been killed before its marker
    capsys.readouterr()
    launcher.train("b", recipe_for(box, out, learning_rate=1e-3), box / "b.yaml", box / "b.log", n_gpus=1)
    assert "resuming" not in capsys.readouterr().out
    assert "resume_from_checkpoint" not in (box / "b.yaml").read_text()


@pytest.mark.parametrize("per_device, grad_acc, gpus, expected", [
    (1, 8, 1, (1, 8)), (1, 8, 2, (1, 4)), (1, 8, 8, (1, 1)), (4, 2, 4, (2, 1)), (8, 1, 2, (4, 1)),
])
def test_the_global_batch_is_kept_on_several_gpus(per_device, grad_acc, gpus, expected):
    got = launcher.keep_global_batch(per_device, grad_acc, gpus)
    assert got[:2] == expected and got[2] is None
    assert got[0] * got[1] * gpus == per_device * grad_acc


def test_a_global_batch_that_cannot_be_split_is_a_warning_that_names_the_batch():
    per_device, grad_acc, warning = launcher.keep_global_batch(1, 8, 3)
    assert (per_device, grad_acc) == (1, 8) and "becomes 24" in warning and "train_overrides" in warning


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2,5")
    assert launcher.visible_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launcher.visible_gpus() == 0


def test_a_deepspeed_recipe_is_launched_with_force_torchrun(tmp_path, monkeypatch, capsys):
    """LlamaFactory refuses DeepSpeed unless torchrun started it, which its CLI does on one GPU only with
    FORCE_TORCHRUN=1: the launcher sets it for a `deepspeed` recipe, and only then."""
    import importlib.util

    lf = Path(importlib.util.find_spec("llamafactory").origin).parent  # its own code, read not imported
    assert "Please use `FORCE_TORCHRUN=1` to launch DeepSpeed training." in (lf / "hparams" / "parser.py").read_text()
    assert 'is_env_enabled("FORCE_TORCHRUN")' in (lf / "launcher.py").read_text()

    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    (tmp_path / "d.json").write_text("[]")
    envs = []

    def llamafactory_cli(cmd, env=None, **kwargs):
        envs.append(env)
        out = Path(yaml.safe_load(Path(cmd[2]).read_text())["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(children, "run", llamafactory_cli)
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    for name, extra in [("plain", {}), ("ds", {"deepspeed": "recipes/deepspeed/ds_z3_config.json"})]:
        recipe = {"model_name_or_path": str(tmp_path / "m"), "dataset_dir": str(tmp_path), "dataset": "d",
                  "output_dir": str(tmp_path / name), **extra}
        launcher.train(name, recipe, tmp_path / f"{name}.yaml", tmp_path / f"{name}.log", n_gpus=1)
    assert envs[0] is None and envs[1]["FORCE_TORCHRUN"] == "1"
    assert "ds: DeepSpeed (recipes/deepspeed/ds_z3_config.json): FORCE_TORCHRUN=1" in capsys.readouterr().out
