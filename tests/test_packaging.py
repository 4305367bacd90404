"""Packaging: templates and recipes are found from an installed wheel, not only from a checkout; the
backends that a vLLM-only or client-only environment imports load no heavy library at import; the
Makefile's real-model demo runs with the CPU's settings."""

import shlex
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


@pytest.mark.parametrize("module", ["semievol_lf.backends.openai", "semievol_lf.backends.vllm"])
def test_importing_a_backend_loads_neither_torch_nor_vllm(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_installed_wheel_finds_templates_and_recipes(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", wheel_dir, ROOT], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheel_dir.glob("semievol_lf-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(meta_name).decode()
    assert {"semievol_lf/py.typed", "semievol_lf/data_info_pack/dataset_info.json",
            "semievol_lf/templates_pack/tasks/mmlu.jinja", "semievol_lf/meteor/pipeline.py"} <= names
    assert any(n.endswith("LICENSE") for n in names)
    assert "Requires-Python: >=3.11" in meta
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    # LlamaFactory only through its extra, so a vLLM environment installs the package with plain pip;
    # no version caps copied from LlamaFactory
    assert [r for r in requires if r.startswith("llamafactory")] == ['llamafactory>=0.9.4; extra == "llamafactory"']
    assert not [r for r in requires if "<" in r.split(";")[0]]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, wheel],
                   check=True, capture_output=True)
    code = (
        "from semievol_lf.paths import data_info_dir, templates_dir, recipes_dir\n"
        "from semievol_lf.data.prompts import task_prompt\n"
        "from semievol_lf.data.loading import Example\n"
        "from semievol_lf.data.tasks import get_task\n"
        "print(templates_dir()); print(recipes_dir()); print(len(list(recipes_dir().glob('*.yaml'))))\n"
        "print(data_info_dir())\n"
        "print(task_prompt(get_task('mmlu'), Example('1', 'Q?', ['a', 'b'], None, 'anatomy')).splitlines()[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    templates, recipes, n_recipes, data_info, first_line = proc.stdout.splitlines()
    assert templates.startswith(str(target)) and recipes.startswith(str(target)) and data_info.startswith(str(target))
    assert int(n_recipes) >= 32
    assert first_line == "The following is a multiple choice question about anatomy."


def test_venv_builds_stop_before_pip_when_the_disk_is_too_small(tmp_path):
    # A CI run once died mid-install with "No space left on device"; the check must refuse first
    # and name the folder, what it builds and how to build it elsewhere.
    script = str(ROOT / "scripts" / "need_disk.sh")
    venv = tmp_path / "not" / "yet" / "venv"
    refused = subprocess.run(["bash", script, "1000000", str(venv), "the X venv", "X_VENV=/elsewhere"],
                             capture_output=True, text=True)
    assert refused.returncode == 1
    assert f"the X venv needs about 1000000 GiB free on the disk of {tmp_path}" in refused.stderr
    assert "X_VENV=/elsewhere" in refused.stderr
    assert not venv.parent.exists()
    allowed = subprocess.run(["bash", script, "0", str(venv), "the X venv", "X_VENV=/elsewhere"],
                             capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stderr


def test_make_demo_real_infers_in_float32_although_its_recipe_is_a_gpu_one():
    """`make demo-real` runs recipes/run_fpb.yaml (bf16, for GPUs) on SmolLM2 on the CPU, where bf16 changed
    greedy answers and broke self-justify parsing (bench/RESULTS.md): the command make would run, read by
    the run's own parser, infers in float32, as the real lane does."""
    from semievol_lf.config.parser import load_config
    from semievol_lf.config.run_args import RunArguments

    shown = subprocess.run(["make", "-n", "--no-print-directory", "demo-real"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout  # under `make test` too, which would add make[1]: lines
    (line,) = [line for line in shown.replace("\\\n", " ").splitlines() if "semievol-lf run" in line]
    words = shlex.split(line)
    cli = next(i for i, w in enumerate(words) if w.endswith("semievol-lf"))
    assert words[cli + 1] == "run"
    recipe, *overrides = words[cli + 2:]
    cfg = load_config(RunArguments, [str(ROOT / recipe), *overrides])
    assert (cfg.model, cfg.dtype) == ("smollm2-135m", "float32")
