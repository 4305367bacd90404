"""Settings: every bad `semievol-lf run` setting fails while parsing (one `error:` line, nothing
created, no heavy import), override forms, --help of every entry point, typed backend arguments,
and the step configurations a run builds."""

import dataclasses
import inspect
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from semievol_lf.config import (
    BACKEND_ARGUMENTS,
    EvaluateArguments,
    PseudolabelArguments,
    RunArguments,
    backend_kwargs,
    build_config,
    check_backend_args,
    load_config,
    parse_overrides,
    read_args,
    split_overrides,
)
from semievol_lf.errors import UserError

PY = sys.executable
HEAVY = ("torch", "transformers", "llamafactory", "faiss", "sentence_transformers", "vllm", "peft")

# (settings after `semievol-lf run recipes/run_demo.yaml`, text the one error line must contain)
BAD_RUN_SETTINGS = [
    (["temperature=-1"], "`temperature` must be >= 0"),
    (["--temperature", "-1"], "`temperature` must be >= 0"),
    (["top_p=0"], "`top_p` must be in (0, 1]"),
    (["theta=1.5"], "`theta` must be in (0, 1]"),
    (["theta=abc"], "`theta: 'abc'`: expected a number"),
    (["n=9"], "`models` x `shots` gives 4 configurations, got `n`=9"),  # run_demo.yaml: shots [0, 1]
    (["n=0"], "`n` must be between 1 and 4"),
    (["iterations=0"], "`iterations` must be >= 1"),
    (["k=0"], "`shots` asks for 1 examples but `k` retrieves only 0"),
    (["shots=0,-1"], "`shots` must be a non-empty list"),
    (["batch_size=0"], "`batch_size` must be >= 1"),
    (["justify=votes"], "`justify: 'votes'`: expected one of ['all', 'disagreements', 'vote']. Did you mean `vote`?"),
    (["backend=tgi"], "`backend: 'tgi'`: expected one of"),
    (["stop_after=train"], "`stop_after: 'train'`"),
    (["no_icp=maybe"], "`no_icp: 'maybe'`: expected true or false"),
    (["model=llama3"], "`model`: unknown preset 'llama3'. Did you mean `llama3.1-8b`?"),
    (["task=mmlux"], "`task`: Unknown task 'mmlux'"),
    (["task=mmlu"], "`source: generated` makes demo data; set `task: demo`"),
    (["thetta=0.3"], "unknown key `thetta`. Did you mean `theta`? Known keys: "),
    (["run_dir=runs/x"], "command line: `run_dir` was renamed `output_dir`"),
    (["--thetta", "0.3"], "unknown key `thetta`"),
    (["template=[llama3"], "`template=[llama3`: not a valid YAML list or mapping"),
    (["shots=[0, 1"], "`shots=[0, 1`: not a valid YAML list or mapping"),
    (["theta.x=1"], "`theta.x`: `theta` is 0.5, not a mapping"),
    (["train_overrides=3"], "`train_overrides: 3`: expected a mapping"),
    (["backend_args=foo"], "`backend_args: 'foo'`: expected a mapping"),
    (["backend_args.base_url=http://x"],
     "`backend_args.base_url`: unknown key for backend=hf. Known keys: device"),
    (["backend=openai", "backend_args.concurency=3"],
     "`backend_args.concurency`: unknown key for backend=openai. Did you mean `concurrency`?"),
    (["backend=openai", "backend_args={timeout: 0}"], "`backend_args.timeout` must be > 0"),
    (["dtype=float64"], "`dtype: 'float64'`: expected one of"),
    (["backend=vllm", "gpu_memory_utilization=1.5"], "`gpu_memory_utilization` must be in (0, 1]"),
    (["backend=vllm", "tensor_parallel_size=two"], "`tensor_parallel_size: 'two'`"),
    (["backend=vllm", "max_model_len=8"], "`max_model_len` (8) leaves no room"),
    (["backend=vllm", "backend_args.max_model_len=512"], "`backend_args.max_model_len`: `max_model_len` is a setting"),
    (["backend_args.batch_size=4"], "`backend_args.batch_size`: `batch_size` is a setting of its own"),
    (["data_sizes.n_labled=5"], "`data_sizes.n_labled`: unknown key. Did you mean `n_labeled`? Known keys: cue_words"),
    (["data_sizes={n_labeled: 0}"], "`data_sizes.n_labeled` must be >= 1"),
    (["data_sizes.seed=3"], "`data_sizes.seed`: set `data_seed` instead"),
    (["data_seed=1"], "`data_seed`=1: `model: tiny-word` knows only the words of the demo data of `data_seed` 0"),
    (["data_sizes.fillers=9"], "`data_sizes.fillers`: `model: tiny-word` knows only the words"),
]
# Steps that need an adapter, run alone: the run always passes one.
BAD_STEP_SETTINGS = [
    ("pseudolabel", ["adapter_name_or_path=null"], "`adapter_name_or_path` is required: pseudo-labeling measures"),
    ("pseudolabel", ["adapter_name_or_path=null", "justify=vote", "models=[base]"],
     "`adapter_name_or_path` is required"),
    ("pseudolabel", ["shard=1"], "`shard` is set but `num_shards` is 1"),
    ("evaluate", ["rag_k=-1"], "`rag_k` must be >= 0"),
    ("evaluate", ["backend=openai", "backend_args.base_url=[x"], "`backend_args.base_url=[x`: not a valid YAML"),
]


def cli(args: list, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "semievol_lf.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def assert_one_error_line(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert text in lines[0], lines[0]


@pytest.mark.parametrize("settings, text", BAD_RUN_SETTINGS, ids=[" ".join(s) for s, _ in BAD_RUN_SETTINGS])
def test_bad_run_setting_fails_before_anything_runs(tmp_path, settings, text):
    run_dir = tmp_path / "run"
    proc = cli(["run", "recipes/run_demo.yaml", f"output_dir={run_dir}", *settings])
    assert_one_error_line(proc, text)
    assert not run_dir.exists() and not proc.stdout  # nothing prepared, built, loaded or trained


@pytest.mark.parametrize("step, settings, text", BAD_STEP_SETTINGS, ids=[" ".join(s) for _, s, _ in BAD_STEP_SETTINGS])
def test_bad_step_setting_fails_before_anything_runs(tmp_path, step, settings, text):
    out = tmp_path / "out"
    proc = cli([step, f"recipes/{step}_demo.yaml", f"output_dir={out}", *settings])
    assert_one_error_line(proc, text)
    assert "justify: vote" not in proc.stderr  # no advice that would be refused in turn
    assert not out.exists()


def test_a_refused_run_imports_no_heavy_module():
    """What makes a refusal fast (well under 2 s): parsing and checking every step imports no model library."""
    code = ("import sys\nfrom semievol_lf import cli\n"
            "for args in (['run', 'recipes/run_demo.yaml', 'temperature=-1'], ['run', '--help'],"
            " ['pseudolabel', 'recipes/pseudolabel_demo.yaml', 'n=9']):\n"
            "    try:\n        cli.main(args)\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


# ------------------------------------------------------------------------------------------ --help

ENTRY_POINTS = {
    "python -m semievol_lf.pseudolabel": ([PY, "-m", "semievol_lf.pseudolabel", "--help"], PseudolabelArguments),
    "python -m semievol_lf.evaluate": ([PY, "-m", "semievol_lf.evaluate", "-h"], EvaluateArguments),
    "python -m semievol_lf.run": ([PY, "-m", "semievol_lf.run", "--help"], RunArguments),
    "semievol-lf run": ([PY, "-m", "semievol_lf.cli", "run", "--help"], RunArguments),
    "semievol-lf pseudolabel": ([PY, "-m", "semievol_lf.cli", "pseudolabel", "recipes/pseudolabel_demo.yaml", "--help"],
                                PseudolabelArguments),
    "semievol-lf evaluate": ([PY, "-m", "semievol_lf.cli", "evaluate", "--help"], EvaluateArguments),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_lists_every_field_with_its_help(name):
    cmd, cls = ENTRY_POINTS[name]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert proc.stdout.startswith("usage: ")
    for f in dataclasses.fields(cls):
        assert f"\n  {f.name}: " in proc.stdout, f.name
        assert f.metadata["help"] in proc.stdout, f.name
    for backend_cls in BACKEND_ARGUMENTS.values():  # the typed backend arguments too
        for f in dataclasses.fields(backend_cls):
            assert f"\n  {f.name}: " in proc.stdout and f.metadata["help"] in proc.stdout, f.name


def test_help_shows_types_and_defaults():
    proc = cli(["run", "--help"])
    assert "  justify: {all, disagreements, vote} = all\n" in proc.stdout
    assert "  models: list of {base, warm} = [base, warm]\n" in proc.stdout
    assert "  model_name_or_path: str or null = null\n" in proc.stdout
    assert "### backend_args (backend=openai)\n" in proc.stdout
    assert "### data_sizes (source: generated)\n" in proc.stdout
    assert "  n_labeled: int = 90\n" in proc.stdout


def test_export_chat_format_help():
    proc = cli(["export-chat-format", "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage: semievol-lf export-chat-format"), proc.stderr
    assert "  model_name_or_path: str" in proc.stdout and "  template: str" in proc.stdout
    assert "--out FOLDER" in proc.stdout


# ------------------------------------------------------------------------------------------ override forms

def test_override_forms():
    assert split_overrides(["theta=0.3", "--k", "2", "--out=a=b", "--temperature", "-1", "--rag", "n=2"]) == [
        ("theta", "0.3"), ("k", "2"), ("out", "a=b"), ("temperature", "-1"), ("rag", "true"), ("n", "2")]
    assert parse_overrides(["--theta", "0.25", "--shots=[0, 1]", "--rag"]) == {
        "theta": 0.25, "shots": [0, 1], "rag": True}
    with pytest.raises(UserError, match="has no key"):
        split_overrides(["=3"])


def test_dotted_keys_deep_merge_into_mappings(tmp_path):
    assert parse_overrides(["backend_args.base_url=http://x:8000/v1", "backend_args.concurrency=4", "a.b.c=1"]) == {
        "backend_args": {"base_url": "http://x:8000/v1", "concurrency": 4}, "a": {"b": {"c": 1}}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backend: openai\nbackend_args: {timeout: 5, concurrency: 2}\n")
    values, where = read_args([str(recipe), "backend_args.concurrency=16", "--backend_args.base_url", "http://y/v1"])
    assert values["backend_args"] == {"timeout": 5, "concurrency": 16, "base_url": "http://y/v1"}
    assert where["backend"] == f"{recipe}:1" and where["backend_args"] == "command line"
    # a whole mapping replaces, a later dotted key merges into it (left to right, as OmegaConf)
    values, _ = read_args([str(recipe), "backend_args={timeout: 9}", "backend_args.max_retries=0"])
    assert values["backend_args"] == {"timeout": 9, "max_retries": 0}


def test_values_that_are_not_yaml_stay_strings_unless_they_open_a_bracket():
    assert parse_overrides(["output_dir=runs/a: b: c", "name=@home", "x="]) == {
        "output_dir": "runs/a: b: c", "name": "@home", "x": ""}
    with pytest.raises(UserError, match=r"`template=\[llama3`: not a valid YAML list or mapping"):
        parse_overrides(["template=[llama3"])


def test_recipe_with_every_override_form(tmp_path):
    recipe = tmp_path / "p.yaml"
    recipe.write_text("model_name_or_path: m\nadapter_name_or_path: a\ndata_dir: d\noutput_dir: o\n")
    cfg = load_config(PseudolabelArguments, [str(recipe), "--theta", "0.7", "--shots=0,2", "--overwrite_output_dir",
                                             "backend=openai", "backend_args.timeout=5"])
    assert (cfg.theta, cfg.shots, cfg.overwrite_output_dir) == (0.7, [0, 2], True)
    assert cfg.backend_args == {"timeout": 5.0}


def test_post_init_errors_name_where_the_key_was_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("iterations: 1\ntheta: 1.5\n")
    with pytest.raises(UserError, match=rf"^{recipe}:2: `theta` must be in \(0, 1\]"):
        load_config(RunArguments, [str(recipe)])


# ------------------------------------------------------------------------------------------ backend arguments

def test_typed_backend_args_are_checked_and_coerced():
    assert check_backend_args("openai", {"timeout": 5, "base_url": "http://x/v1"}) == {"timeout": 5.0,
                                                                                      "base_url": "http://x/v1"}
    assert check_backend_args("hf", {}) == {}
    assert backend_kwargs("vllm", {"kv_cache_memory_bytes": 512, "engine_kwargs": {"enforce_eager": True}}) == {
        "kv_cache_memory_bytes": 512, "enforce_eager": True}
    with pytest.raises(ValueError, match=r"`backend_args.kv_cache_memory_bytes: 'big'`: expected int"):
        check_backend_args("vllm", {"kv_cache_memory_bytes": "big"})
    with pytest.raises(ValueError, match=r"`backend_args.device`: unknown key for backend=openai"):
        check_backend_args("openai", {"device": "cpu"})


def _constructor(backend: str):
    if backend == "hf":
        from semievol_lf.backends.hf import HFBackend
        return HFBackend
    if backend == "vllm":
        from semievol_lf.backends.vllm import VLLMBackend
        return VLLMBackend
    from semievol_lf.backends.openai import OpenAIBackend
    return OpenAIBackend


@pytest.mark.parametrize("backend", BACKEND_ARGUMENTS)
def test_backend_arguments_match_the_constructors(backend):
    """The typed fields are keyword arguments of the backend, with the backend's own defaults."""
    params = inspect.signature(_constructor(backend).__init__).parameters
    for f in dataclasses.fields(BACKEND_ARGUMENTS[backend]):
        if backend == "vllm" and f.name in ("engine_kwargs", "kv_cache_memory_bytes"):  # go to vllm.LLM as they are
            assert any(p.kind is p.VAR_KEYWORD for p in params.values())
            continue
        assert f.name in params, f.name
        assert params[f.name].default == f.default, f.name


def test_step_config_carries_the_checked_backend_args():
    cfg = build_config(EvaluateArguments, {"model_name_or_path": "m", "data_dir": "d", "output_dir": "o",
                                           "backend": "vllm", "tensor_parallel_size": 2, "max_new_tokens": 64,
                                           "backend_args": {"engine_kwargs": {"swap_space": 4}}})
    assert cfg.backend_args == {"engine_kwargs": {"swap_space": 4}}
    # max_model_len derived as LlamaFactory's vLLM engine does: cutoff_len + max_new_tokens
    assert cfg.backend_kwargs() == {"dtype": "auto", "max_model_len": 2048 + 64, "gpu_memory_utilization": 0.7,
                                    "tensor_parallel_size": 2, "swap_space": 4}


# ------------------------------------------------------------------------------------------ the run's steps

def test_run_routes_its_parts_into_the_step_configs():
    run = build_config(RunArguments, {"backend_args": {"device": "cpu"}, "top_p": 0.9, "temperature": 0.7,
                                      "max_new_tokens": 8, "seed": 5})
    p = run.pseudolabel_args("data", "warm", "out", seed=6, exclude_ids_file="ex.json")
    assert (p.model_name_or_path, p.template, p.adapter_name_or_path) == (".cache/tiny-llama", "default", "warm")
    assert (p.top_p, p.temperature, p.max_new_tokens, p.seed, p.exclude_ids_file) == (0.9, 0.7, 8, 6, "ex.json")
    assert (p.models, p.shots, p.n, p.overwrite_output_dir) == (["base", "warm"], [0, 1, 2, 3], 4, True)
    e = run.evaluate_args("SFT", "data", None, "out", rag_k=3, model="/abs/model")
    assert (e.model_name_or_path, e.adapter_name_or_path, e.rag_k, e.name) == ("/abs/model", None, 3, "SFT")
    assert (e.temperature, e.seed, e.backend_args) == (0.0, 5, {"device": "cpu"})  # greedy, not the run's 0.7
    assert p.backend_args is not run.backend_args  # a step's settings are its own


@pytest.mark.parametrize("switches, models, shots, n, repeat, judge", [
    ({}, ["base", "warm"], [0, 1, 2, 3], 4, False, "warm"),
    ({"no_iwp": True}, ["base"], [0, 1, 2, 3], 4, False, "base"),  # the base model does everything
    ({"no_icp": True}, ["base", "warm"], [0], 4, True, "warm"),  # n=4 kept: configurations repeat
    ({"no_iwp": True, "no_icp": True}, ["base"], [0], 4, True, "base"),
    ({"no_cl": True}, ["warm"], [3], 1, False, "warm"),  # the warm model with the k-shot prompt
    ({"no_cl": True, "k": 2, "shots": [0, 1, 2]}, ["warm"], [2], 1, False, "warm"),
    ({"no_icp": True, "n": 1}, ["base", "warm"], [0], 1, True, "warm"),
])
def test_ablation_switches(switches, models, shots, n, repeat, judge):
    p = build_config(RunArguments, switches).pseudolabel_args("d", "w", "o", seed=0)
    assert (p.models, p.shots, p.n, p.repeat_configs, p.judge_model) == (models, shots, n, repeat, judge)


@pytest.mark.parametrize("values, message", [
    ({"no_iwp": True, "n": 5}, "`no_iwp` leaves 4 configurations (base x `shots`) for `n`=5 collaborators"),
    ({"n": 9}, "`n` must be between 1 and 8"),  # not lowered to fit
])
def test_an_n_the_switches_cannot_honour_is_an_error(values, message):
    with pytest.raises(UserError, match=re.escape(message)):
        build_config(RunArguments, values)


def test_repeat_configs_allows_more_collaborators_than_configurations():
    base = {"model_name_or_path": "m", "adapter_name_or_path": "a", "data_dir": "d", "output_dir": "o",
            "models": ["warm"], "shots": [0], "n": 3}
    with pytest.raises(UserError, match=r"`n` must be between 1 and 1.*`repeat_configs=true`"):
        build_config(PseudolabelArguments, base)
    assert build_config(PseudolabelArguments, {**base, "repeat_configs": True}).n == 3


def test_w_o_iwp_runs_alone_without_an_adapter():
    cfg = build_config(PseudolabelArguments, {"model_name_or_path": "m", "data_dir": "d", "output_dir": "o",
                                              "models": ["base"], "judge_model": "base"})
    assert cfg.adapter_name_or_path is None


def test_no_as_keeps_every_pseudo_label():
    run = build_config(RunArguments, {"no_as": True, "theta": 0.3})
    assert run.theta == run.pseudolabel_args("d", "w", "o", seed=0).theta == 1.0


def test_run_arguments_hold_no_copied_field():
    """Each run setting is declared once, in the part that owns it; the steps share those parts."""
    own = [n for n in vars(RunArguments)["__annotations__"] if n not in ("PROG", "SECTION")]
    shared = {f.name for f in dataclasses.fields(PseudolabelArguments)} | {
        f.name for f in dataclasses.fields(EvaluateArguments)}
    # the run's: preset overrides (None = the preset's), and its folder, which holds each step's `output_dir`
    assert not set(own) & shared - {"model_name_or_path", "template", "output_dir"}
    run = build_config(RunArguments, {"output_dir": "runs/x"})
    assert all(step.output_dir.startswith("runs/x/") for step in run._step_configs())


def test_backend_auto_picks_vllm_only_where_it_is_importable(monkeypatch):
    import importlib.util

    args = {"model_name_or_path": "m", "data_dir": "d", "output_dir": "o", "backend": "auto", "dtype": "bfloat16"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    cfg = build_config(EvaluateArguments, args)
    assert cfg.backend == "hf" and "vllm is not installed" in cfg.backend_reason
    assert cfg.backend_kwargs() == {"dtype": "bfloat16"}  # the vllm GPU settings do not reach hf
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    cfg = build_config(EvaluateArguments, args)
    assert cfg.backend == "vllm" and "vllm is importable" in cfg.backend_reason
    assert cfg.backend_kwargs()["max_model_len"] == 2048 + cfg.max_new_tokens
