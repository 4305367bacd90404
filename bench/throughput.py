"""CPU inference speed: the hf backend against its version at BASELINE on the same requests, and the limit.

    make bench                                      # python bench/throughput.py
    python bench/throughput.py --questions 32 --threads 1 [--bf16]

The requests are the method's, built by its own prompt functions from the released FPB data
(SEMIEVOL_DATA, default ../shared/semievol-data) for SmolLM2-135M-Instruct (`.cache/smollm2-135m`,
built when missing): collaborate (each question with 0, 1, 2 and 3 labeled examples in the prompt,
the first labeled rows standing in for the retrieved ones), self-justify (the question with its
four collaborate answers), scoring (`Answer: X` under the 0-shot prompt, Eq. 6) and evaluation
(0-shot, greedy). Everything is greedy, so the two paths must give the same answers token for token;
the scores' largest difference is printed. Each stage runs on both paths back to back in one
process, at the same thread count, so a load change on a shared machine hits both alike.

The limit is a matrix-product micro-benchmark at the model's own linear shapes (every layer's q, k,
v, o, gate, up, down and the output layer, each with its share of the work) at the thread count and
row count of a batch, fp32 and bf16. A stage's GFLOP/s counts 2 x (linear parameters) per token
(prompt and generated; attention's own products, under 10% at these lengths, are left out), so its
share of the limit is how close the backend gets to what the machine's matmuls can do.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINE = "f40553d"  # the hf backend before length-sorted batches and logits_to_keep (issue 21)
RELEASED = Path(os.environ.get("SEMIEVOL_DATA") or ROOT.parent / "shared" / "semievol-data")


def make_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter with seeded noise (no training needed): bench/backends.py's warm model."""
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


def baseline_backend_class(commit: str = BASELINE):
    """HFBackend as it was at `commit`, loaded from git beside today's (its relative imports resolve
    against this checkout's package, unchanged since)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:semievol_lf/backends/hf.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"bench/throughput.py compares with the hf backend at {commit}, read from git: {err}; "
                         "run it in a clone with the project's history") from None
    path = Path(tempfile.mkdtemp()) / "hf_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("semievol_lf.backends.hf_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HFBackend


# ----------------------------------------------------------------------------- the limit
def linear_shapes(config) -> list[tuple[int, int, int]]:
    """(in, out, count) of every linear layer that runs once per token: per layer q, k, v, o, gate, up,
    down, then the output layer.

    >>> from types import SimpleNamespace as C
    >>> linear_shapes(C(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1,
    ...                 head_dim=4, num_hidden_layers=3, vocab_size=100))
    [(8, 8, 3), (8, 4, 6), (8, 8, 3), (8, 16, 6), (16, 8, 3), (8, 100, 1)]
    """
    h, heads, kv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    d = getattr(config, "head_dim", None) or h // heads
    n = config.num_hidden_layers
    return [(h, heads * d, n), (h, kv * d, 2 * n), (heads * d, h, n), (h, config.intermediate_size, 2 * n),
            (config.intermediate_size, h, n), (h, config.vocab_size, 1)]


def flops_per_token(shapes) -> float:
    return sum(2 * i * o * c for i, o, c in shapes)


def matmul_limit(shapes, rows: int, dtype, repeats: int = 3) -> float:
    """GFLOP/s of the model's linear work for `rows` tokens at once: each shape timed (best of `repeats`),
    weighted by how often it runs per token."""
    import torch

    total_s = 0.0
    for i, o, count in shapes:
        a, w = torch.randn(rows, i, dtype=dtype), torch.randn(i, o, dtype=dtype)
        a @ w
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ w
            best = min(best, time.perf_counter() - start)
        total_s += best * count
    return flops_per_token(shapes) * rows / total_s / 1e9


# ----------------------------------------------------------------------------- requests
def workload(model_dir: Path, template: str, task_name: str, data: Path, questions: int, max_new_tokens: int):
    """(chat format, task, {stage: requests}) for the first `questions` unlabeled and test rows; the
    justify requests are built later from collaborate's answers (`justify_requests`)."""
    from semievol_lf.backends import GenerationRequest, ScoreRequest
    from semievol_lf.data.loading import find_split_file, load_examples
    from semievol_lf.data.prompts import icp_prompt, task_prompt
    from semievol_lf.data.tasks import get_task
    from semievol_lf.llamafactory.chat_format import ChatFormat

    task = get_task(task_name)
    labeled, unlabeled, test = (load_examples(find_split_file(data, s), task, s)
                                for s in ("labeled", "unlabeled", "test"))
    unlabeled, test = unlabeled[:questions], test[:questions]
    chat = ChatFormat(str(model_dir), template)

    def gen(prompt: str, adapter: bool) -> GenerationRequest:
        return GenerationRequest(chat.prompt_ids(prompt), adapter=adapter, seed=0, temperature=0,
                                 max_new_tokens=max_new_tokens)

    stages = {
        "collaborate": [gen(icp_prompt(task, u, labeled[:shots]), adapter=shots % 2 == 1)
                        for u in unlabeled for shots in (0, 1, 2, 3)],
        # a labeled row's answer stands in for the pseudo-label (the step scores `Answer: X`, whatever X is)
        "score": [ScoreRequest(*chat.encode(task_prompt(task, u), task.target(labeled[i].answer)))
                  for i, u in enumerate(unlabeled)],
        "evaluate": [gen(task_prompt(task, e), adapter=True) for e in test],
    }
    return chat, task, unlabeled, stages


def justify_requests(chat, task, unlabeled, collaborate_texts: list[str], max_new_tokens: int):
    from semievol_lf.backends import GenerationRequest
    from semievol_lf.data.prompts import justify_prompt

    return [GenerationRequest(chat.prompt_ids(justify_prompt(task, u, collaborate_texts[4 * i:4 * i + 4])),
                              adapter=True, seed=0, temperature=0, max_new_tokens=max_new_tokens)
            for i, u in enumerate(unlabeled)]


# ----------------------------------------------------------------------------- runs
def timed(backend, stage: str, requests: list):
    start = time.perf_counter()
    out = backend.score(requests) if stage == "score" else backend.generate(requests)
    return time.perf_counter() - start, out


def compare(stage: str, old, new) -> str:
    """'32/32 equal' for generations (token ids), the largest |difference| of a log-probability for scores."""
    if stage == "score":
        diff = max((abs(a - b) for x, y in zip(old, new) for a, b in zip(x, y)), default=0.0)
        return f"max |dlogp| {diff:.1e}"
    same = sum(a.token_ids == b.token_ids for a, b in zip(old, new))
    return f"{same}/{len(new)} equal"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".cache" / "smollm2-135m",
                        help="SmolLM2-135M-Instruct's folder (built there when missing), or another local model")
    parser.add_argument("--template", default="smollm2", help="the model's LlamaFactory template")
    parser.add_argument("--task", default="fpb")
    parser.add_argument("--data", type=Path, default=RELEASED / "fpb")
    parser.add_argument("--questions", type=int, default=32, help="unlabeled and test rows")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--bf16", action="store_true", help="add bf16 rows for today's backend")
    parser.add_argument("--baseline", default=BASELINE, help="the commit whose hf backend is 'before'")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoConfig

    from semievol_lf.backends.hf import HFBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        raise SystemExit(f"the released data is not at {args.data} (set SEMIEVOL_DATA; see its SOURCE.md)")
    if not (args.model / "config.json").is_file():
        from semievol_lf.models.build import build_preset_model
        build_preset_model("smollm2-135m", args.model)
    tmp = tempfile.TemporaryDirectory()
    adapter = make_adapter(args.model, Path(tmp.name) / "warm")
    chat, task, unlabeled, stages = workload(args.model, args.template, args.task, args.data, args.questions,
                                             args.max_new_tokens)

    shapes = linear_shapes(AutoConfig.from_pretrained(args.model))
    per_token = flops_per_token(shapes)
    mean_len = sum(len(r.prompt_ids) for r in stages["collaborate"]) / len(stages["collaborate"])
    rows = max(1, int(args.batch_size * mean_len))
    limits = {name: matmul_limit(shapes, rows, dtype)
              for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}

    paths = {"before": (baseline_backend_class(args.baseline), "float32"), "now": (HFBackend, "float32")}
    if args.bf16:
        paths["now, bf16"] = (HFBackend, "bfloat16")
    backends = {name: cls(str(args.model), str(adapter), stop_ids=chat.stop_ids, decode=chat.decode,
                          batch_size=args.batch_size, dtype=dtype, device="cpu")
                for name, (cls, dtype) in paths.items()}
    for backend in backends.values():
        backend.generate(stages["evaluate"][:2])  # first-call costs out of the timings

    results = []
    for stage in ("collaborate", "justify", "score", "evaluate"):
        requests = stages[stage] if stage != "justify" else justify_requests(
            chat, task, unlabeled, [g.text for g in results[0]["outputs"]["now"]], args.max_new_tokens)
        record = {"stage": stage, "requests": len(requests), "seconds": {}, "outputs": {}}
        for name, backend in backends.items():
            record["seconds"][name], record["outputs"][name] = timed(backend, stage, requests)
        prompt = sum(len(r.prompt_ids) + len(getattr(r, "response_ids", ())) for r in requests)
        generated = 0 if stage == "score" else sum(len(g.token_ids) for g in record["outputs"]["now"])
        record.update(prompt_tokens=prompt, generated_tokens=generated,
                      agreement=compare(stage, record["outputs"]["before"], record["outputs"]["now"]))
        for name in backends:
            seconds = record["seconds"][name]
            gflops = per_token * (prompt + generated) / seconds / 1e9
            record.setdefault("rates", {})[name] = {
                "requests/s": len(requests) / seconds, "prompt tok/s": prompt / seconds, "GFLOP/s": gflops,
                "share of limit": gflops / limits[paths[name][1]]}
        if args.bf16:
            record["bf16 agreement"] = compare(stage, record["outputs"]["now"], record["outputs"]["now, bf16"])
        results.append(record)
    for backend in backends.values():
        backend.close()
    tmp.cleanup()

    print(f"\nhf backend, {torch.get_num_threads()} thread(s), batch {args.batch_size}, {args.model.name}, "
          f"{per_token / 1e9:.3f} GFLOP per token")
    print(f"limit (matmuls at the model's shapes, {rows} rows): fp32 {limits['float32']:.0f} GFLOP/s, "
          f"bf16 {limits['bfloat16']:.0f} GFLOP/s")
    head = f"{'stage':<12}{'path':<11}{'requests':>9}{'prompt tok':>11}{'gen tok':>8}{'s':>8}{'req/s':>8}" \
           f"{'prompt tok/s':>13}{'GFLOP/s':>9}{'of limit':>9}{'speed-up':>9}  vs before"
    print(head + "\n" + "-" * len(head))
    for r in results:
        for name in backends:
            rate = r["rates"][name]
            speedup = r["seconds"]["before"] / r["seconds"][name]
            note = "" if name == "before" else r["agreement"] if name == "now" else r.get("bf16 agreement", "")
            print(f"{r['stage']:<12}{name:<11}{r['requests']:>9}{r['prompt_tokens']:>11}{r['generated_tokens']:>8}"
                  f"{r['seconds'][name]:>8.1f}{rate['requests/s']:>8.2f}{rate['prompt tok/s']:>13.0f}"
                  f"{rate['GFLOP/s']:>9.1f}{rate['share of limit']:>9.0%}{speedup:>8.2f}x  {note}")
    for r in results:
        r.pop("outputs")
    return {"threads": torch.get_num_threads(), "limits": limits, "stages": results}


if __name__ == "__main__":
    main()
