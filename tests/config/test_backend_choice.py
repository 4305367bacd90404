"""`backend: auto` on a GPU machine without vLLM stops with the two ways out; on the CPU it stays hf.

The device probe (`inference_args.cuda_device`) is the only thing replaced: these machines have no
CUDA device, so the GPU branch is reached by saying there is one.
"""

import importlib.util

import pytest

from semievol_lf.config import EvaluateArguments, RunArguments, as_config, inference_args
from semievol_lf.config.inference_args import choose_backend
from semievol_lf.errors import UserError

STEP = {"model_name_or_path": "m", "data_dir": "d", "output_dir": "o", "backend": "auto"}


@pytest.fixture
def no_vllm(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))


def _gpu(monkeypatch, present: bool):
    monkeypatch.setattr(inference_args, "cuda_device", lambda: present)


def test_the_choice_itself():
    assert choose_backend("auto", vllm_found=True, cuda=True)[0] == "vllm"
    assert choose_backend("auto", vllm_found=False, cuda=False)[0] == "hf"
    assert choose_backend("hf", vllm_found=False, cuda=True) == ("hf", "`backend: hf`")
    assert choose_backend("openai", vllm_found=False, cuda=True)[0] == "openai"
    with pytest.raises(ValueError, match="CUDA device but no vLLM"):
        choose_backend("auto", vllm_found=False, cuda=True)


def test_auto_on_the_cpu_stays_hf(monkeypatch, no_vllm):
    _gpu(monkeypatch, False)
    cfg = as_config(EvaluateArguments, STEP)
    assert cfg.backend == "hf" and "vllm is not installed" in cfg.backend_reason


def test_auto_on_a_gpu_without_vllm_names_both_ways_out(monkeypatch, no_vllm, tmp_path):
    _gpu(monkeypatch, True)
    adapter = tmp_path / "warm"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 24}')
    with pytest.raises(UserError) as err:
        as_config(EvaluateArguments, {**STEP, "adapter_name_or_path": str(adapter), "max_new_tokens": 64})
    msg = str(err.value)
    assert "an environment with vLLM" in msg and "backend=openai" in msg and "`backend: hf`" in msg
    assert (f"`vllm serve m --enable-lora --lora-modules warm={adapter} --max-lora-rank 32 --max-model-len 2112 "
            "--generation-config vllm --port 8000`") in msg


def test_a_run_on_a_gpu_without_vllm_stops_before_anything_and_hf_by_choice_runs(monkeypatch, no_vllm, tmp_path):
    _gpu(monkeypatch, True)
    run = {"output_dir": str(tmp_path / "run"), "model": "qwen2.5-7b", "task": "mmlu", "source": str(tmp_path),
           "backend": "auto", "max_new_tokens": 256}
    with pytest.raises(UserError) as err:
        as_config(RunArguments, run)
    # the run trains its adapters later: the server loads each one (runtime LoRA), rank from the recipes
    assert ("`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve Qwen/Qwen2.5-7B-Instruct --enable-lora "
            "--max-lora-rank 16 --max-model-len 2304 --generation-config vllm --port 8000`") in str(err.value)
    assert not (tmp_path / "run").exists()
    assert as_config(RunArguments, {**run, "backend": "hf"}).backend == "hf"  # chosen explicitly: no stop

