"""Wall time of each backend (hf, vllm, openai) on one workload, and their answers to compare.

Each backend runs in the environment that has it, writes one JSON, and `table` prints them:

    .venv/bin/python bench/backends.py run --backend hf --model M --adapter A --out hf.json
    .venv-vllm/bin/python bench/backends.py run --backend vllm --model M --adapter A --out vllm.json
    .venv-vllm/bin/python scripts/serve_vllm.py --model M --adapter A --port 8000 &   # then:
    .venv/bin/python bench/backends.py run --backend openai --model M --adapter A --out openai.json
    python bench/backends.py table hf.json vllm.json openai.json

The workload (`workload`): `prompts` random token-id prompts, each answered greedily by the base
model and by the warm adapter (`max_new_tokens` tokens), and `prompts` (prompt, response) pairs
scored under each. The vLLM lane (tests/vllm_lane/test_serve_agreement.py) runs it for all three
backends on the same tiny model, checks that they agree, and prints this table. Times include no
server start-up (the openai row's load is connecting); on a 2-core CPU with a tiny model they
measure per-request overhead, not what a GPU would do with a real model.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semievol_lf.backends.base import GenerationRequest, ScoreRequest


def workload(prompts: int = 16, max_new_tokens: int = 16, seed: int = 0, vocab: tuple[int, int] = (4, 900)):
    """(generation requests, score requests): every prompt greedy under base and warm; random pairs scored under both.

    Token 0 (<s>) starts every prompt, as the template renders it.
    """
    rng = random.Random(seed)
    ids = [tuple([0] + [rng.randrange(*vocab) for _ in range(rng.randrange(8, 24))]) for _ in range(prompts)]
    gens = [GenerationRequest(p, adapter=adapter, seed=i, temperature=0.0, max_new_tokens=max_new_tokens)
            for i, p in enumerate(ids) for adapter in (False, True)]
    scores = [ScoreRequest(p, tuple(rng.randrange(*vocab) for _ in range(rng.randrange(1, 12))), adapter=adapter)
              for p in ids for adapter in (False, True)]
    return gens, scores


def run_backend(name: str, model: str, adapter: str | None, gens: list, scores: list, **backend_kwargs) -> dict:
    """Load `name`, run the workload once, close it; the answers and the seconds of each phase."""
    from semievol_lf.backends import load_backend

    start = time.perf_counter()
    backend = load_backend(name, model, adapter, **backend_kwargs)
    loaded = time.perf_counter()
    try:
        out_gens = backend.generate(gens)
        generated = time.perf_counter()
        out_scores = backend.score(scores)
        scored = time.perf_counter()
    finally:
        backend.close()
    return {"backend": name, "requests": {"generate": len(gens), "score": len(scores)},
            "seconds": {"load": round(loaded - start, 3), "generate": round(generated - loaded, 3),
                        "score": round(scored - generated, 3)},
            "token_ids": [list(g.token_ids) for g in out_gens], "texts": [g.text for g in out_gens],
            "scores": out_scores}


def table(results: list[dict]) -> str:
    """One row per backend: seconds to load, to generate, to score, and requests per second."""
    head = f"{'backend':<8}{'load s':>9}{'generate s':>12}{'gen req/s':>11}{'score s':>10}{'score req/s':>13}"
    rows = [head, "-" * len(head)]
    for r in results:
        s, n = r["seconds"], r["requests"]
        gen_rate, score_rate = n["generate"] / max(s["generate"], 1e-9), n["score"] / max(s["score"], 1e-9)
        rows.append(f"{r['backend']:<8}{s['load']:>9.2f}{s['generate']:>12.2f}{gen_rate:>11.1f}"
                    f"{s['score']:>10.2f}{score_rate:>13.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run one backend on the workload, write its JSON")
    run.add_argument("--backend", required=True, choices=["hf", "vllm", "openai"])
    run.add_argument("--model", required=True)
    run.add_argument("--adapter")
    run.add_argument("--out", required=True)
    run.add_argument("--prompts", type=int, default=16)
    run.add_argument("--max-new-tokens", type=int, default=16)
    run.add_argument("--stop-id", type=int, action="append", default=[], help="stop token id (repeatable)")
    run.add_argument("--backend-args", default="{}", help="JSON of extra backend keyword arguments")
    tab = sub.add_parser("table", help="print the table of some result JSONs")
    tab.add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "table":
        print(table([json.loads(Path(p).read_text()) for p in args.results]))
        return
    gens, scores = workload(args.prompts, args.max_new_tokens)
    kwargs = {"stop_ids": tuple(args.stop_id), **json.loads(args.backend_args)}
    result = run_backend(args.backend, args.model, args.adapter, gens, scores, **kwargs)
    Path(args.out).write_text(json.dumps(result))
    print(table([result]))


if __name__ == "__main__":
    main()
