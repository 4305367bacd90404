"""The committed recipes are the generator's output, and LlamaFactory's own parser accepts them."""

import json
import os
import sys

import pytest
from conftest import ROOT, make_sandbox, run_cmd

from semievol_lf.errors import UserError
from semievol_lf.llamafactory.recipes import generate, validate_recipe

PY = sys.executable


def test_committed_recipes_match_the_generator():
    generated = generate()
    for name, text in generated.items():
        committed = (ROOT / "recipes" / name).read_text()
        assert committed == text, f"recipes/{name} drifted: run `python -m semievol_lf.recipes`"
    tasks = {"mmlu", "mmlu_pro", "arc", "fpb", "usmle", "pubmedqa", "convfinqa", "demo"}
    plain = {f"{stage}_{t}.yaml" for t in tasks for stage in ("warmup", "pseudolabel", "evolve", "evaluate", "run")}
    variants = {f"variants/{v}/{stage}_{t}.yaml" for v in ("ds_z2", "ds_z3", "qlora") for t in tasks - {"demo"}
                for stage in ("warmup", "evolve")}
    extra = {"deepspeed/ds_z2_config.json", "deepspeed/ds_z3_config.json", "meteor_demo.yaml"}
    assert plain | variants | extra == set(generated)


def test_paper_settings_and_evolve_from_the_base_model():
    import yaml

    warm = yaml.safe_load((ROOT / "recipes" / "warmup_mmlu.yaml").read_text())
    evolve = yaml.safe_load((ROOT / "recipes" / "evolve_mmlu.yaml").read_text())
    for r in (warm, evolve):
        assert (r["lora_rank"], r["lora_target"], r["learning_rate"], r["num_train_epochs"]) == (16, "all", 1e-4, 2.0)
        assert (r["per_device_train_batch_size"], r["gradient_accumulation_steps"], r["cutoff_len"]) == (1, 8, 1024)
        assert r["overwrite_output_dir"] is True and r["report_to"] == "none" and r["bf16"] is True
        assert r["model_name_or_path"] == "meta-llama/Llama-3.1-8B-Instruct" and r["template"] == "llama3"
    assert "adapter_name_or_path" not in evolve  # M_evol starts from M_base, not the warm adapter
    assert evolve["dataset"] == "mmlu_labeled,mmlu_selected"


def test_other_model_presets(tmp_path):
    files = generate(model="qwen2.5-7b")
    assert "template: qwen\n" in files["warmup_mmlu.yaml"]
    assert "Qwen/Qwen2.5-7B-Instruct" in files["pseudolabel_arc.yaml"]
    assert "template: gemma2\n" in generate(model="gemma2-9b")["evolve_fpb.yaml"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_model, demo_source):
    return make_sandbox(tmp_path_factory.mktemp("recipes"), tiny_model, demo_source)


def test_every_committed_recipe_validates(sandbox):
    files = sorted(str(p.relative_to(sandbox)) for p in (sandbox / "recipes").glob("*_*.yaml"))
    proc = run_cmd([PY, "-m", "semievol_lf.recipes", "validate", *files], cwd=sandbox)
    assert proc.stdout.count(": ok (") == len(files) == 41  # 40 SemiEvol recipes and meteor_demo.yaml
    assert "meteor_demo.yaml: ok (meteor, student smollm2-135m, teacher hf)" in proc.stdout


def test_deepspeed_and_qlora_variants_validate_and_keep_the_plain_output_dir(sandbox):
    """The variants LlamaFactory's parser accepts (deepspeed: the config is read as JSON where deepspeed is not
    installed); each writes where the plain recipe writes, so the next step finds its model."""
    import yaml

    files = [f"recipes/variants/{v}/{stage}_mmlu.yaml" for v in ("ds_z2", "ds_z3", "qlora")
             for stage in ("warmup", "evolve")]
    proc = run_cmd([PY, "-m", "semievol_lf.recipes", "validate", *files], cwd=sandbox)
    assert proc.stdout.count(": ok (") == 6
    plain = yaml.safe_load((sandbox / "recipes/warmup_mmlu.yaml").read_text())
    qlora = yaml.safe_load((sandbox / "recipes/variants/qlora/warmup_mmlu.yaml").read_text())
    z3 = yaml.safe_load((sandbox / "recipes/variants/ds_z3/warmup_mmlu.yaml").read_text())
    assert qlora["output_dir"] == z3["output_dir"] == plain["output_dir"]
    assert (qlora["quantization_bit"], qlora["finetuning_type"]) == (4, "lora")
    assert json.loads((sandbox / z3["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    broken = sandbox / "recipes/deepspeed/broken.json"
    broken.write_text("{not json")
    bad = sandbox / "recipes/variants/ds_z3/bad_mmlu.yaml"
    bad.write_text((sandbox / "recipes/variants/ds_z3/warmup_mmlu.yaml").read_text().replace(
        "ds_z3_config.json", "broken.json"))
    proc = run_cmd([PY, "-m", "semievol_lf.recipes", "validate", bad.relative_to(sandbox)], cwd=sandbox, check=False)
    assert proc.returncode == 2
    assert "bad_mmlu.yaml:12: `deepspeed`: cannot read recipes/deepspeed/broken.json" in proc.stderr


@pytest.mark.parametrize("edit, message", [
    (("lora_rank: 16", "lora_rnak: 16"), r"warmup_demo.yaml:10: unknown key `lora_rnak`"),
    (("dataset: demo_labeled", "dataset: demo_labelled"), r"warmup_demo.yaml:16: `dataset`: .*demo_labelled"),
    (("template: default", "template: defualt"),
     r"warmup_demo.yaml:17: `template`: unknown LlamaFactory template 'defualt'; did you mean 'default'\?"),
    (("model_name_or_path: .cache/tiny-llama", "model_name_or_path: .cache/tiny-lama"),
     r"warmup_demo.yaml:3: `model_name_or_path`: .cache/tiny-lama does not exist"),
])
def test_broken_recipes_fail_with_file_line_and_key(sandbox, edit, message):
    path = sandbox / "recipes" / "warmup_demo.yaml"
    broken = sandbox / "recipes" / "broken" / "warmup_demo.yaml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(path.read_text().replace(*edit))
    proc = run_cmd([PY, "-m", "semievol_lf.recipes", "validate", "recipes/broken/warmup_demo.yaml"], cwd=sandbox,
                   check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    import re

    assert re.search(message, proc.stderr), proc.stderr


def test_pseudolabel_recipe_typo_is_caught(sandbox):
    path = sandbox / "recipes" / "pseudolabel_demo.yaml"
    broken = sandbox / "recipes" / "broken2" / "pseudolabel_demo.yaml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(path.read_text().replace("theta: 0.5", "theta: 1.5"))
    with pytest.raises(UserError, match=r"`theta` must be in \(0, 1\]"):
        validate_recipe(broken)


@pytest.mark.parametrize("name, old", [("run_demo.yaml", "run_dir"), ("meteor_demo.yaml", "meteor_dir")])
def test_a_recipe_with_the_old_folder_key_names_its_new_name(tmp_path, name, old):
    """`semievol-lf run` and `meteor run` write their `output_dir`, as every step does; a recipe written
    before the rename is still recognised as a run (or METEOR) recipe and refused with the new name."""
    recipe = tmp_path / name
    recipe.write_text((ROOT / "recipes" / name).read_text().replace("\noutput_dir:", f"\n{old}:"))
    line = next(n for n, text in enumerate(recipe.read_text().splitlines(), 1) if text.startswith(f"{old}:"))
    with pytest.raises(UserError) as err:
        validate_recipe(recipe)
    assert str(err.value) == f"{recipe}:{line}: `{old}` was renamed `output_dir`"
    kind = "run" if name.startswith("run") else "meteor"
    assert f"ok ({kind}," in validate_recipe(ROOT / "recipes" / name)


def test_gpu_recipes_infer_with_vllm_in_bf16_and_a_context_that_fits():
    """GPU presets: vLLM when importable (`auto`), bf16, max_model_len = cutoff_len + max_new_tokens (not
    Llama-3.1's 131072, whose KV cache does not fit smaller GPUs); the CPU demo keeps hf and no GPU keys."""
    import yaml

    for task in ("mmlu", "convfinqa"):
        for stage in ("pseudolabel", "evaluate", "run"):
            r = yaml.safe_load((ROOT / "recipes" / f"{stage}_{task}.yaml").read_text())
            assert (r["backend"], r["dtype"], r["gpu_memory_utilization"]) == ("auto", "bfloat16", 0.7), stage
            assert r["max_model_len"] == r["cutoff_len"] + r["max_new_tokens"] < 131072
    demo = yaml.safe_load((ROOT / "recipes" / "run_demo.yaml").read_text())
    assert demo["backend"] == "hf" and not {"dtype", "max_model_len", "gpu_memory_utilization"} & set(demo)


@pytest.mark.parametrize("visible, first", [(None, "0"), ("3,5", "3"), ("GPU-a1b2, GPU-c3d4", "GPU-a1b2"), ("", "")])
def test_validate_sees_the_first_visible_device_only(visible, first):
    from semievol_lf.llamafactory.recipes import first_visible_device

    assert first_visible_device(visible) == first


def test_a_train_recipe_is_checked_as_one_process_on_one_gpu_sees_it(sandbox, monkeypatch):
    """With two GPUs visible LlamaFactory's parser demands torchrun: `get_train_args` runs with
    CUDA_VISIBLE_DEVICES narrowed to the first one. Here a stand-in torch counts the devices CUDA would
    see (no GPU on the CPU machines); the `validate` command narrows it before torch is imported."""
    import llamafactory.hparams
    import torch

    seen = []
    real = llamafactory.hparams.get_train_args
    monkeypatch.setattr(llamafactory.hparams, "get_train_args",
                        lambda args: (seen.append(os.environ["CUDA_VISIBLE_DEVICES"]), real(args))[1])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(os.environ["CUDA_VISIBLE_DEVICES"].split(",")))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.chdir(sandbox)  # the recipe's paths are relative to the checkout
    assert ": ok (sft," in validate_recipe("recipes/warmup_demo.yaml")
    assert seen == ["3"]

    code = ("import os, sys; from semievol_lf.llamafactory import recipes; recipes.validate_recipe = lambda f: "
            "os.environ['CUDA_VISIBLE_DEVICES']; recipes.main(['validate', 'x.yaml'])")
    proc = run_cmd([PY, "-c", code], cwd=sandbox, env={**os.environ, "CUDA_VISIBLE_DEVICES": "3,5"})
    assert proc.stdout == "3\n"
