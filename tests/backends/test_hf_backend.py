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
