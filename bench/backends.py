"""Wall time of each backend (hf, vllm, openai) on one workload, and their answers to compare.

Each backend runs in the environment that has it, writes one JSON, and `table` prints them:

    .venv/bin/python bench/backends.py run --backend hf --model M --adapter A --out hf.json
    .venv-vllm/bin/python bench/backends.py run --backend vllm --model M --adapter A --out vllm.json
    .venv-vllm/bin/python scripts/serve_vllm.py --model M --adapter A --port 8000 &   # then:
    .venv/bin/python bench/backends.py run --backend openai --model M --adapter A --out openai.json
    python bench/backends.py table hf.json vllm.json openai.json

`ServerLoad` polls a `vllm serve`'s `/metrics` while a stage runs (requests running and waiting in
its engine) and its `/load` (requests inside its API server, counted with `--enable-server-load-tracking`:
the window as the server saw it, also when a loaded CPU keeps the API server from handing them on to the
engine as fast as they come) and `stage_table` prints a stage's throughput per way of
running it (tests/vllm_lane/test_serve_window.py writes it to serve_window.txt).

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
import re
import sys
import threading
import time
import urllib.request
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


def sampled_stage(prompts: int = 256, max_new_tokens: int = 16, seed: int = 1, vocab: tuple[int, int] = (4, 900)):
    """A pseudo-labeling stage's shape: every prompt sampled (temperature 1, its own seed) under base and warm."""
    rng = random.Random(seed)
    ids = [tuple([0] + [rng.randrange(*vocab) for _ in range(rng.randrange(8, 24))]) for _ in range(prompts)]
    return [GenerationRequest(p, adapter=adapter, seed=1000 + 2 * i + adapter, temperature=1.0,
                              max_new_tokens=max_new_tokens) for i, p in enumerate(ids) for adapter in (False, True)]


# vLLM's Prometheus gauges (vllm/v1/metrics/loggers.py): sequences in the running batch, and queued ones.
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def parse_metrics(text: str) -> dict[str, float]:
    """The gauges in a `/metrics` answer, summed over their label sets (one per engine).

    'vllm:num_requests_running{engine="0",model_name="m"} 12.0' -> {"vllm:num_requests_running": 12.0, ...}
    """
    out = dict.fromkeys(GAUGES, 0.0)
    for line in text.splitlines():
        m = re.match(r"^([\w:]+)(?:\{[^}]*\})?\s+([-+0-9.eE]+|NaN)$", line)
        if m and m.group(1) in out and m.group(2) != "NaN":
            out[m.group(1)] += float(m.group(2))
    return out


class ServerLoad:
    """Poll `<server>/metrics` and `<server>/load` every `interval` s in a thread between `start()` and
    `stop()`: the peak of requests running, waiting, and both together in the engine (`in_flight`), and of
    requests inside the API server (`api`: vLLM's `server_load`, 0 unless the server runs with
    `--enable-server-load-tracking`)."""

    def __init__(self, base_url: str, interval: float = 0.02):
        root = base_url.rstrip("/").removesuffix("/v1")
        self.url, self.load_url = root + "/metrics", root + "/load"
        self.interval, self.samples = interval, 0
        self.peak = {"running": 0.0, "waiting": 0.0, "in_flight": 0.0, "api": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    g = parse_metrics(resp.read().decode())
            except OSError:
                g = None
            try:  # a server without `/load` (older vLLM) still gives its engine's gauges
                with urllib.request.urlopen(self.load_url, timeout=5) as resp:
                    api = float(json.loads(resp.read())["server_load"])
            except (OSError, ValueError, KeyError):
                api = 0.0
            if g is not None:
                running, waiting = g["vllm:num_requests_running"], g["vllm:num_requests_waiting"]
                self.samples += 1
                for key, value in (("running", running), ("waiting", waiting), ("in_flight", running + waiting),
                                   ("api", api)):
                    self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.interval)

    def start(self) -> "ServerLoad":
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"samples": self.samples, **{f"peak_{k}": int(v) for k, v in self.peak.items()}}


def stage_table(rows: list[dict]) -> str:
    """One row per way of running one stage: requests, seconds, requests/s, generated tokens/s, and the
    server's peak requests in flight (running + waiting, from /metrics) where there is a server."""
    head = (f"{'way':<30}{'requests':>9}{'seconds':>9}{'req/s':>8}{'gen tok/s':>11}"
            f"{'peak in flight (running+waiting)':>34}")
    lines = [head, "-" * len(head)]
    for r in rows:
        peak = (f"{r['peak_in_flight']} ({r['peak_running']}+{r['peak_in_flight'] - r['peak_running']})"
                if "peak_in_flight" in r else "-")
        lines.append(f"{r['way']:<30}{r['requests']:>9}{r['seconds']:>9.2f}{r['requests'] / r['seconds']:>8.1f}"
                     f"{r['tokens'] / r['seconds']:>11.1f}{peak:>34}")
    return "\n".join(lines)


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
