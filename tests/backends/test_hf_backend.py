"""The hf backend with a fully fine-tuned warm model (LlamaFactory `finetuning_type: full`)."""

import torch

from semievol_lf.backends import GenerationRequest, ScoreRequest, load_backend


def test_full_warm_model_is_used_for_adapter_requests(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    warm = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in warm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    warm.save_pretrained(tmp_path / "warm")  # a whole model: config.json, no adapter_config.json
    backend = load_backend("hf", str(tiny_model), str(tmp_path / "warm"), decode=lambda ids: " ".join(map(str, ids)))
    prompt, response = (1, 5, 6, 7), (8, 9)
    on, off = backend.score([ScoreRequest(prompt, response, True), ScoreRequest(prompt, response, False)])
    ids = torch.tensor([prompt + response])
    for model, got in ((warm, on), (AutoModelForCausalLM.from_pretrained(tiny_model), off)):
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
        expected = [logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(response)]
        assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-5
    assert max(abs(a - b) for a, b in zip(on, off)) > 1e-3  # the two models really differ
    sampled = [GenerationRequest(prompt, adapter=a, seed=3, temperature=1.0, max_new_tokens=5) for a in (True, False)]
    assert len(backend.generate(sampled)) == 2


def test_dtype_auto_is_bf16_on_a_gpu_that_has_it_and_float32_on_the_cpu():
    from semievol_lf.backends.hf import resolve_dtype

    assert resolve_dtype("auto", "cuda", bf16_supported=True)[0] == "bfloat16"
    assert resolve_dtype("auto", "cuda:1", bf16_supported=False)[0] == "float16"
    assert resolve_dtype("auto", "cpu", bf16_supported=False)[0] == "float32"
    assert resolve_dtype("float32", "cuda", bf16_supported=True) == ("float32", "set by `backend_args.dtype`")


def test_a_mocked_gpu_gets_bf16_and_close_hands_the_memory_back(tiny_model, monkeypatch):
    """On a (mocked) bf16 GPU the model loads in bf16; `close` empties the CUDA cache, so the next fine-tune
    of `semievol-lf run` starts on a free GPU. The model itself stays on the CPU (`.to` is the identity)."""
    released = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append(True))
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)
    backend = load_backend("hf", str(tiny_model), None, decode=str)
    assert backend.device == "cuda" and next(backend.model.parameters()).dtype == torch.bfloat16
    assert "bfloat16 on cuda" in backend.description
    backend.close()
    assert released == [True] and backend.model is None
