"""Several processes, several nodes: the launcher reads LlamaFactory's torchrun variables as its CLI
does, keeps the global batch by dividing gradient accumulation by the world size, and a real
two-process torchrun fine-tune of the tiny model on the CPU (gloo) matches the one-process run."""

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import make_sandbox

from semievol_lf import children
from semievol_lf.errors import UserError
from semievol_lf.llamafactory import launcher
from semievol_lf.llamafactory.recipes import train_recipe
from semievol_lf.models.presets import get_preset

TORCHRUN_VARS = ("FORCE_TORCHRUN", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE",
                 "USE_RAY", "USE_KT", "USE_MCA", "RDZV_ID", "MIN_NNODES", "MAX_NNODES")


# ------------------------------------------------------------------ the arithmetic (pure)
@pytest.mark.parametrize("world, grad_acc", [(1, 8), (2, 4), (8, 1)])
def test_accumulation_8_is_divided_by_the_world_size(world, grad_acc):
    assert launcher.keep_global_batch(1, 8, world) == (1, grad_acc, None)  # the paper's 1 x 8


def test_a_world_size_that_does_not_divide_the_global_batch_is_an_error_naming_the_keys():
    per_device, grad_acc, error = launcher.keep_global_batch(1, 8, 16)
    assert (per_device, grad_acc) == (1, 8)
    assert "`per_device_train_batch_size` 1 x `gradient_accumulation_steps` 8" in error
    assert "16 processes: it becomes 128" in error and "NPROC_PER_NODE x NNODES" in error


# ------------------------------------------------------------------ reading the launch as LlamaFactory does
def test_plan_launch_reads_the_variables_llamafactory_reads():
    """Against LlamaFactory's own launcher code (read, not imported), then the cases."""
    lf = Path(importlib.util.find_spec("llamafactory").origin).parent
    code = (lf / "launcher.py").read_text()
    for line in ('is_env_enabled("FORCE_TORCHRUN") or (get_device_count() > 1 and not use_ray() and not use_kt())',
                 'os.getenv("NNODES", "1")', 'os.getenv("NODE_RANK", "0")',
                 'os.getenv("NPROC_PER_NODE", str(get_device_count()))', 'os.getenv("MASTER_ADDR", "127.0.0.1")',
                 'os.getenv("MASTER_PORT", str(find_available_port()))'):
        assert line in code, line

    plan = launcher.plan_launch
    assert plan({}, 0) == plan({}, 1) == launcher.Launch(False)  # CPU, one GPU: one process
    assert plan({"USE_RAY": "1"}, 8).world_size == 1
    assert plan({}, 8).world_size == 8  # every visible GPU when NPROC_PER_NODE is unset
    assert plan({"FORCE_TORCHRUN": "1"}, 1).world_size == 1
    assert plan({"FORCE_TORCHRUN": "true", "NPROC_PER_NODE": "2"}, 0).world_size == 2
    two_nodes = plan({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}, 8)
    assert two_nodes.world_size == 16
    assert two_nodes.describe() == "torchrun: 8 processes per node x 2 nodes (this is node 1), master 10.0.0.1:29500"


@pytest.mark.parametrize("environ, devices, message", [
    ({"FORCE_TORCHRUN": "1"}, 0, "set NPROC_PER_NODE"),
    ({"NNODES": "2"}, 8, "NNODES=2: set MASTER_ADDR and MASTER_PORT on every node"),
    ({"NNODES": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}, 1, "set FORCE_TORCHRUN=1 on every node"),
    ({"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "two"}, 0, "NPROC_PER_NODE='two'"),
    ({"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "RDZV_ID": "x", "MIN_NNODES": "1", "MAX_NNODES": "4"}, 0,
     "MIN_NNODES != MAX_NNODES"),
])
def test_a_launch_whose_world_size_is_unknown_is_refused(environ, devices, message):
    with pytest.raises(UserError, match=re.escape(message)):
        launcher.plan_launch(environ, devices)


# ------------------------------------------------------------------ train(): environment, recipe file, log line
@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    """`subprocess.run` standing in for `llamafactory-cli train`: records (recipe, env), leaves an adapter."""
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    (tmp_path / "d.json").write_text("[]")
    calls = []

    def llamafactory_cli(cmd, env=None, **kwargs):
        recipe = yaml.safe_load(Path(cmd[2]).read_text())
        calls.append((recipe, env))
        Path(recipe["output_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(recipe["output_dir"]) / "adapter_config.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(children, "run", llamafactory_cli)

    def train(name, n_gpus=None, **train_keys):
        recipe = {"model_name_or_path": str(tmp_path / "m"), "dataset_dir": str(tmp_path), "dataset": "d",
                  "output_dir": str(tmp_path / name), "per_device_train_batch_size": 1,
                  "gradient_accumulation_steps": 8, **train_keys}
        launcher.train(name, recipe, tmp_path / f"{name}.yaml", tmp_path / f"{name}.log", n_gpus=n_gpus)
        return yaml.safe_load((tmp_path / f"{name}.yaml").read_text())

    return train, calls


def test_two_nodes_pass_through_and_the_saved_recipe_holds_the_divided_accumulation(fake_cli, monkeypatch, capsys):
    train, calls = fake_cli
    two_nodes = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
                 "NPROC_PER_NODE": "2"}
    for var, value in two_nodes.items():
        monkeypatch.setenv(var, value)
    saved = train("evolve", n_gpus=2)
    assert saved["gradient_accumulation_steps"] == 2 and saved["per_device_train_batch_size"] == 1
    recipe, env = calls[0]
    assert recipe == saved and {k: env[k] for k in two_nodes} == two_nodes  # nothing stripped
    assert env["PATH"].split(":")[0] == str(Path(launcher.llamafactory_cli()).parent)  # this venv's torchrun
    out = capsys.readouterr().out
    assert ("evolve: torchrun: 2 processes per node x 2 nodes (this is node 1), master 10.0.0.1:29500; "
            "per-device batch 1 x gradient accumulation 2 x 4 processes = global batch 8") in out


def test_one_node_gets_a_port_named_in_the_log(fake_cli, monkeypatch, capsys):
    train, calls = fake_cli
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("NPROC_PER_NODE", "8")
    assert train("warmup")["gradient_accumulation_steps"] == 1
    port = calls[0][1]["MASTER_PORT"]
    assert f"torchrun: 8 processes per node x 1 node, master 127.0.0.1:{port};" in capsys.readouterr().out


def test_one_process_keeps_the_recipe_and_the_environment(fake_cli, capsys):
    train, calls = fake_cli
    assert train("warmup", n_gpus=1)["gradient_accumulation_steps"] == 8
    assert calls[0][1] is None  # the environment is inherited unchanged
    assert ("warmup: one process (no torchrun); per-device batch 1 x gradient accumulation 8 x 1 process = "
            "global batch 8") in capsys.readouterr().out


def test_an_unsplittable_batch_stops_before_training(fake_cli, monkeypatch, tmp_path):
    train, calls = fake_cli
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("NPROC_PER_NODE", "16")
    with pytest.raises(UserError, match=r"warmup: torchrun: 16 processes .*`gradient_accumulation_steps` 8"):
        train("warmup")
    assert calls == [] and not (tmp_path / "warmup").exists()


# ------------------------------------------------------------------ a real two-process fine-tune on the CPU
def optimizer_steps(log: Path) -> int:
    """The trainer's own count: "Total optimization steps = N" in the fine-tune's log."""
    return int(re.search(r"Total optimization steps = (\d+)", log.read_text()).group(1))


def logged_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_processes_on_the_cpu_train_like_one(tmp_path, tiny_model, demo_source, monkeypatch, capsys):
    """The paper's 1 x 8 on one process against 1 x 4 x 2 processes (torchrun, gloo on the CPU).

    Tolerances: accelerate hands batch i of one shuffled order to rank i mod 2, so both runs see the
    same 8 examples at every optimizer step and differ only in the order floats are summed (the
    gradient all-reduce). Measured: the first logged loss (mean of steps 1-4, so also the first
    updates) agrees to ~1e-7 relative, hence 1e-4; the final loss to ~1e-5, and by at most 0.5%
    along the way, as rounding differences grow over the steps at learning rate 5e-3, hence 5%.
    A wrong global batch changes the step count, which must be equal."""
    box = make_sandbox(tmp_path / "box", tiny_model, demo_source)
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU and gloo even on a machine with GPUs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = train_recipe("demo", get_preset("tiny"), "warmup")
    recipe.update(model_name_or_path=str(box / ".cache" / "tiny-llama"), dataset_dir=str(box / "data_info"),
                  num_train_epochs=10.0, logging_steps=4, per_device_train_batch_size=1, gradient_accumulation_steps=8)

    runs = {}
    for name, environ in [("one", {}), ("two", {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"})]:
        for var, value in environ.items():
            monkeypatch.setenv(var, value)
        out = launcher.train(name, {**recipe, "output_dir": str(box / name)}, box / f"{name}.yaml", box / f"{name}.log")
        runs[name] = (optimizer_steps(box / f"{name}.log"), logged_losses(out))

    printed = capsys.readouterr().out
    assert "one: one process (no torchrun); per-device batch 1 x gradient accumulation 8 x 1 process" in printed
    port = re.search(r"two: torchrun: 2 processes per node x 1 node, master 127\.0\.0\.1:(\d+); per-device batch 1 x "
                     r"gradient accumulation 4 x 2 processes = global batch 8", printed).group(1)
    assert yaml.safe_load((box / "two.yaml").read_text())["gradient_accumulation_steps"] == 4
    log = (box / "two.log").read_text()
    assert f"Initializing 2 distributed tasks at: 127.0.0.1:{port}" in log and "world size: 2" in log
    assert log.count("Total train batch size (w. parallel, distributed & accumulation) = 8") == 1

    (steps_one, losses_one), (steps_two, losses_two) = runs["one"], runs["two"]
    assert steps_one == steps_two == 40  # 30 examples, 4 steps an epoch, 10 epochs
    assert len(losses_one) == len(losses_two) == 10
    assert losses_two[0] == pytest.approx(losses_one[0], rel=1e-4)
    assert losses_two[-1] == pytest.approx(losses_one[-1], rel=0.05)
    assert losses_two[-1] < 0.25 * losses_two[0]  # and it learned
