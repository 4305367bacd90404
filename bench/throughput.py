"""Pseudo-labeling throughput on the CPU: the batched hf backend vs a naive one-request-at-a-time loop.

    make bench            # or: python bench/throughput.py --requests 256

The workload is the demo task's collaborative step: unlabeled questions x 4 configurations
(base/warm, 0-3 in-context examples), sampled at temperature 1. The warm adapter is a LoRA
made with peft and perturbed, so no training is needed. Prints requests/s and the ratio.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_adapter(model_dir: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--model", type=Path, default=ROOT / ".cache" / "tiny-llama",
                        help="the tiny model's folder (built there when missing)")
    args = parser.parse_args(argv)

    from semievol_lf.backends import GenerationRequest, load_backend
    from semievol_lf.data.demo import DemoSpec, generate
    from semievol_lf.llamafactory.chat_format import ChatFormat
    from semievol_lf.models.tiny import build_model
    from semievol_lf.semievol.pseudolabel.collaborate import request_seed, sample_configs

    model_dir = build_model(args.model, seed=0)
    tmp = tempfile.TemporaryDirectory()
    adapter = make_adapter(model_dir, Path(tmp.name) / "warm")
    chat = ChatFormat(str(model_dir), "default")
    rows = generate(DemoSpec(seed=0))["unlabeled"]
    configs = sample_configs(["base", "warm"], [0, 1, 2, 3], 4, seed=42)
    demos = [r["question"] for r in rows[:3]]
    requests = []
    for i, row in enumerate(rows):
        for c in configs:
            shots = "".join(f"Sentiment of: {d}\nAnswer: A\n\n" for d in demos[:c.shots])
            prompt = f"{shots}Sentiment of: {row['question']}\nA. negative\nB. neutral\nC. positive"
            requests.append(GenerationRequest(chat.prompt_ids(prompt), adapter=c.model == "warm",
                                              seed=request_seed(0, i, c.name), max_new_tokens=args.max_new_tokens))
    requests = requests[:args.requests]

    results = {}
    for label, batch in (("batched (hf backend)", args.batch_size), ("naive loop (1 at a time)", 1)):
        backend = load_backend("hf", str(model_dir), str(adapter), stop_ids=chat.stop_ids, decode=chat.decode,
                               batch_size=batch)
        backend.generate(requests[:4])  # warm-up
        start = time.perf_counter()
        out = backend.generate(requests) if batch > 1 else [backend.generate([r])[0] for r in requests]
        results[label] = (len(requests) / (time.perf_counter() - start), out)
        backend.close()
    (fast, a), (slow, b) = results.values()
    print(f"\n{'backend':<28}{'requests/s':>12}")
    for label, (rate, _) in results.items():
        print(f"{label:<28}{rate:>12.1f}")
    print(f"speed-up: {fast / slow:.1f}x on {len(requests)} requests; identical samples: {a == b}")
    tmp.cleanup()
    return {"requests": len(requests), "rates": {k: rate for k, (rate, _) in results.items()}, "identical": a == b,
            "texts": [g.text for g in a]}


if __name__ == "__main__":
    main()
