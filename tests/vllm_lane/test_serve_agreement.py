"""The openai backend against a real `vllm serve`, and the three backends against each other.

Runs in the vLLM venv (`make test-vllm`). On one tiny Llama and a LoRA adapter (make_fixtures.py):
- hf (transformers + peft, run by the main venv's python through bench/backends.py), vllm
  in-process, and openai over HTTP to vLLM's OpenAI server give the same greedy answers and the
  same scores (per token and mean NLL, to 1e-3), for the base model and for the warm adapter;
- the server is killed in the middle of an openai run: one clear UserError; once it is
  restarted, the same run_cached call finishes the rest without recomputing finished chunks;
- the wall time of each backend on the workload is printed (bench/backends.py `table`) and
  written to $SEMIEVOL_BENCH_OUT (default: the test's tmp folder) as backends.txt and .json.

One engine at a time: the hf run, then the in-process engine (closed), then the server. An idle
engine keeps a core busy and would slow the next one.
"""

import json
import os
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs the vLLM venv: bash scripts/make_vllm_env.sh")

from lane import MAIN_PYTHON, REPO, Server, load_script, tiny  # noqa: F401 (tiny: a fixture)

from semievol_lf.backends.openai import OpenAIBackend
from semievol_lf.errors import UserError
from semievol_lf.io_utils import JsonlLog
from semievol_lf.step import run_cached

EOS = 1  # the tiny model's </s>: vLLM keeps it at the end of token_ids, hf drops it
ENGINE = {"dtype": "float32", "max_model_len": 256, "seed": 0}
bench = load_script("bench_backends", REPO / "bench" / "backends.py")


@pytest.fixture(scope="module")
def work():
    return bench.workload(prompts=16, max_new_tokens=16)


@pytest.fixture(scope="module")
def hf_run(tiny, tmp_path_factory) -> dict:
    if not Path(MAIN_PYTHON).exists():
        pytest.skip(f"the hf side needs the main venv ({MAIN_PYTHON})")
    out = tmp_path_factory.mktemp("bench") / "hf.json"
    subprocess.run([MAIN_PYTHON, str(REPO / "bench" / "backends.py"), "run", "--backend", "hf", "--model", tiny[0],
                    "--adapter", tiny[1], "--out", str(out), "--stop-id", str(EOS), "--prompts", "16",
                    "--max-new-tokens", "16"], check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def vllm_run(tiny, work, hf_run) -> dict:  # after hf: one engine at a time
    return bench.run_backend("vllm", tiny[0], tiny[1], *work, stop_ids=(EOS,), kv_cache_memory_bytes=256 << 20,
                             **ENGINE)


@pytest.fixture(scope="module")
def server(tiny, vllm_run, tmp_path_factory):  # after the in-process engine is closed
    s = Server(*tiny, tmp_path_factory.mktemp("server"))
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def openai_run(tiny, work, server) -> dict:
    return bench.run_backend("openai", tiny[0], tiny[1], *work, stop_ids=(EOS,), base_url=server.url)


def _strip_eos(ids: list[int]) -> list[int]:
    return ids[:-1] if ids and ids[-1] == EOS else ids


def _mean_nll(lps: list[float]) -> float:
    return -sum(lps) / len(lps)


def test_all_three_give_the_same_greedy_answers(work, hf_run, vllm_run, openai_run):
    gens = work[0]
    hf = [_strip_eos(t) for t in hf_run["token_ids"]]
    for other in (vllm_run, openai_run):
        assert [_strip_eos(t) for t in other["token_ids"]] == hf, f"{other['backend']} and hf differ"
    assert openai_run["token_ids"] == vllm_run["token_ids"] and openai_run["texts"] == vllm_run["texts"]
    base = [t for t, r in zip(hf, gens) if not r.adapter]
    warm = [t for t, r in zip(hf, gens) if r.adapter]
    assert sum(b != w for b, w in zip(base, warm)) >= len(base) // 2, "the adapter barely changes the answers"


@pytest.mark.parametrize("adapter", [False, True], ids=["base", "warm"])
def test_all_three_give_the_same_scores(work, hf_run, vllm_run, openai_run, adapter):
    pick = [i for i, r in enumerate(work[1]) if r.adapter == adapter]
    hf = [hf_run["scores"][i] for i in pick]
    assert all(len(s) == len(work[1][i].response_ids) for s, i in zip(hf, pick))
    for other in (vllm_run, openai_run):
        theirs = [other["scores"][i] for i in pick]
        token_gap = max(abs(a - b) for x, y in zip(hf, theirs) for a, b in zip(x, y))
        nll_gap = max(abs(_mean_nll(x) - _mean_nll(y)) for x, y in zip(hf, theirs))
        assert token_gap < 1e-3 and nll_gap < 1e-3, f"{other['backend']} vs hf: token {token_gap}, NLL {nll_gap}"


def test_print_the_timing_table(hf_run, vllm_run, openai_run, server, tmp_path):
    results = [hf_run, vllm_run, openai_run]
    text = bench.table(results) + f"\nvllm serve start-up: {server.starts[0]:.1f} s (not in the openai row)"
    out = Path(os.environ.get("SEMIEVOL_BENCH_OUT", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "backends.json").write_text(json.dumps([{k: r[k] for k in ("backend", "requests", "seconds")}
                                                   for r in results], indent=1))
    (out / "backends.txt").write_text(text + "\n")
    print("\n" + text)


def test_a_killed_server_gives_a_clear_error_and_a_restart_resumes(tiny, work, server, openai_run, tmp_path):
    gens = [replace(r, max_new_tokens=48) for r in work[0]]  # longer answers: time to kill the server mid-chunk
    keyed = [(f"q{i}", r) for i, r in enumerate(gens)]
    backend = OpenAIBackend(tiny[0], tiny[1], base_url=server.url, stop_ids=(EOS,), concurrency=4, max_retries=3,
                            backoff=0.5, timeout=30)
    asked: list[int] = []  # the size of each chunk sent
    killer = threading.Timer(0.05, server.kill)

    def call(reqs):
        asked.append(len(reqs))
        if len(asked) == 3 and not killer.is_alive() and not killer.finished.is_set():
            killer.start()  # the third chunk: kill the server while its requests are in flight
        return backend.generate(reqs)

    log_path = tmp_path / "collaborate.jsonl"
    encode = lambda g: {"text": g.text, "token_ids": list(g.token_ids)}
    try:
        with pytest.raises(UserError, match=rf"server at {server.url} unreachable after 4 tries: .*re-run to resume"):
            run_cached(call, keyed, JsonlLog(log_path), encode, chunk_size=4, desc="collaborate")
        kept = [row["key"] for row in JsonlLog(log_path).load()]
        assert kept == [k for k, _ in keyed[:len(kept)]] and len(kept) in (8, 12)  # whole chunks before the kill

        server.start()
        asked.clear()
        done = run_cached(call, keyed, JsonlLog(log_path), encode, chunk_size=4, desc="collaborate")
    finally:
        backend.close()
    assert sum(asked) == len(keyed) - len(kept)  # the finished chunks were not asked again
    whole = OpenAIBackend(tiny[0], tiny[1], base_url=server.url, stop_ids=(EOS,))
    try:
        expected = whole.generate(gens)
    finally:
        whole.close()
    assert [done[k]["token_ids"] for k, _ in keyed] == [list(g.token_ids) for g in expected]
    print(f"\nvllm serve restart: {server.starts[-1]:.1f} s")
