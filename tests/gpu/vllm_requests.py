"""Run a request file through the in-process vllm backend and write its answers (for tests/gpu).

Runs in the vLLM environment (.venv-vllm, no LlamaFactory): the requests arrive as token ids.

    .venv-vllm/bin/python tests/gpu/vllm_requests.py --model M --adapter A --requests in.json --out out.json

in.json:  {"generate": [{"prompt_ids": [...], "adapter": true, "seed": 0, "max_new_tokens": 16}, ...],
           "score": [{"prompt_ids": [...], "response_ids": [...], "adapter": false}, ...], "stop_ids": [2]}
out.json: {"generate": [{"text": "...", "token_ids": [...]}, ...], "score": [[-0.1, ...], ...],
           "seconds": {"engine_start": 30.1, "generate": 0.4, "score": 0.2}, "vllm": "0.x"}
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's semievol_lf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    import vllm

    from semievol_lf.backends.base import GenerationRequest, ScoreRequest
    from semievol_lf.backends.vllm import VLLMBackend

    spec = json.loads(Path(args.requests).read_text())
    gen = [GenerationRequest(tuple(r["prompt_ids"]), adapter=r["adapter"], seed=r["seed"], temperature=0.0,
                             max_new_tokens=r["max_new_tokens"]) for r in spec["generate"]]
    score = [ScoreRequest(tuple(r["prompt_ids"]), tuple(r["response_ids"]), adapter=r["adapter"])
             for r in spec["score"]]
    seconds = {}
    start = time.perf_counter()
    backend = VLLMBackend(args.model, args.adapter, seed=0, dtype=args.dtype, max_model_len=args.max_model_len,
                          gpu_memory_utilization=args.gpu_memory_utilization, stop_ids=tuple(spec["stop_ids"]))
    try:
        backend.generate(gen[:1])  # the engine starts lazily: count its start-up apart
        seconds["engine_start"] = time.perf_counter() - start
        start = time.perf_counter()
        generations = backend.generate(gen)
        seconds["generate"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = backend.score(score)
        seconds["score"] = time.perf_counter() - start
    finally:
        backend.close()
    Path(args.out).write_text(json.dumps({
        "generate": [{"text": g.text, "token_ids": list(g.token_ids)} for g in generations],
        "score": scores, "seconds": seconds, "vllm": vllm.__version__}))


if __name__ == "__main__":
    main()
