"""Build the vLLM lane's fixtures: the tiny Llama model and a LoRA adapter that changes its outputs.

Runs in the MAIN venv (it needs peft, which the vLLM venv does not have):

    .venv/bin/python tests/vllm_lane/make_fixtures.py --out .cache/vllm-fixtures
    # -> .cache/vllm-fixtures/model    (semievol_lf.models.tiny's tiny Llama, widened to head_dim 32)
    #    .cache/vllm-fixtures/adapter  (PEFT LoRA, r=8 on every linear layer, lora_B perturbed)

The fresh LoRA of peft has lora_B = 0 (a no-op); the adapter here sets every lora_B to seeded
noise so that base and adapter outputs differ. Same seed, same files.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_adapter(model_dir: str | Path, out: str | Path, seed: int = 0, r: int = 8, scale: float = 2.0) -> Path:
    """Save a LoRA adapter for `model_dir` whose lora_B weights are N(0, scale^2) noise."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(out)
    if (out / "adapter_config.json").is_file():
        return out
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(out)
    return out


def build_fixtures(out: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """(model_dir, adapter_dir) under `out`; skips what is already built."""
    from semievol_lf.models.tiny import build_model

    out = Path(out)
    # hidden 128 / 4 heads = head_dim 32: vLLM's CPU attention has no kernel for the demo's 16.
    model_dir = build_model(out / "model", seed=seed, hidden_size=128, intermediate_size=256)
    adapter_dir = build_adapter(model_dir, out / "adapter", seed=seed)
    return model_dir, adapter_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for model/ and adapter/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # a checkout need not be pip-installed into the main venv
    model_dir, adapter_dir = build_fixtures(args.out, args.seed)
    print(f"model: {model_dir}\nadapter: {adapter_dir}")
