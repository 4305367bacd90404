"""JSON over HTTP with retries, backoff and a time limit (stdlib only), for the openai backend and
vLLM's sleep endpoints (sleep.py).

    client = HTTPClient("http://127.0.0.1:8000/v1", api_key=None, timeout=60.0, max_retries=5, backoff=1.0)
    client.request("/models")                       # GET
    client.request("/completions", {"prompt": [0]})  # POST

A connection error, a timeout or an HTTP 429/5xx is retried `max_retries` times with exponential
backoff; then `_Unreachable` says why. Any other HTTP error is a `UserError` at once, with the
server's own message.

Several servers of the same model (`HTTPClient(["http://a:8000/v1", "http://b:8000/v1"], ...)`): each
request goes to the server with the fewest requests of this client in flight (ties in turn), chosen
again for every try; a server that failed a try is passed over for its backoff delay while another
is up, so a retry goes to another server at once instead of waiting. `request(path, server=i)` asks
one server (its model list, its adapters). `answered[i]` counts the spread requests server i answered.
"""

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..errors import UserError

MAX_BACKOFF = 30.0  # seconds between two tries, at most


def backoff_delay(attempt: int, backoff: float, retry_after: str | None = None, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait before try `attempt + 2`: backoff x 2^attempt, or the server's Retry-After; at most `cap`.

    (0, 1.0) -> 1.0;  (3, 1.0) -> 8.0;  (9, 1.0) -> 30.0;  (0, 1.0, "5") -> 5.0
    """
    if retry_after is not None:
        try:
            return min(cap, max(0.0, float(retry_after)))
        except ValueError:  # an HTTP date: fall back to our own schedule
            pass
    return min(cap, backoff * 2 ** attempt)


def retryable_status(status: int) -> bool:
    """429 (rate limit) and 5xx (server error, overloaded, restarting) are worth another try."""
    return status == 429 or status >= 500


# ---------------------------------------------------------------------------------------------
# HTTP with retries
# ---------------------------------------------------------------------------------------------

class _Unreachable(Exception):
    """Retries exhausted (or aborted because another request exhausted them); args[0] says why."""


def _error_message(body: bytes) -> str:
    """The server's own message from an OpenAI-style error body, else the body itself (shortened)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        error = data.get("error", data)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return text[:300]


class HTTPClient:
    """POST/GET JSON with retries, backoff and a per-request time limit (stdlib only), to one server or
    spread over several (see the module docstring).

    `abort` is set by the first request that gives up, so the others stop retrying at once.
    """

    def __init__(self, base_url: str | Sequence[str], api_key: str | None, *, timeout: float, max_retries: int,
                 backoff: float, sleep: Callable[[threading.Event, float], None] | None = None):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("HTTPClient needs at least one server URL")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.base_url = self.base_urls[0]
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.abort = threading.Event()
        self._sleep = sleep or (lambda event, seconds: event.wait(seconds))
        n = len(self.base_urls)
        # per server: requests of this client in flight, answers given, passed over until (time.monotonic())
        self.in_flight, self.answered, self._down_until = [0] * n, [0] * n, [0.0] * n
        self._turn = 0  # the next server in turn among equally busy ones
        self._lock = threading.Lock()

    def _pick(self) -> int:
        """The server for the next try: the least busy of those up (all, when none is), ties in turn."""
        n = len(self.base_urls)
        with self._lock:
            now = time.monotonic()
            up = [i for i in range(n) if self._down_until[i] <= now] or list(range(n))
            i = min(up, key=lambda i: (self.in_flight[i], (i - self._turn) % n))
            self._turn = (i + 1) % n
            self.in_flight[i] += 1
            return i

    def _another_up(self, failed: int) -> bool:
        with self._lock:
            now = time.monotonic()
            return any(self._down_until[i] <= now for i in range(len(self.base_urls)) if i != failed)

    def request(self, path: str, payload: dict | Callable[[int], dict] | None = None,
                server: int | None = None) -> dict:
        """The JSON answer of `path` (GET without a payload, else POST), from `server` or the least busy one.

        `payload` may be a function of the chosen server's index (a request whose `model` field names
        a LoRA by each server's own name).
        """
        last = ""
        for attempt in range(self.max_retries + 1):
            if self.abort.is_set():
                raise _Unreachable(last or "stopped: another request gave up")
            i = server
            if i is None:
                i = self._pick()
            else:
                with self._lock:
                    self.in_flight[i] += 1
            url = f"{self.base_urls[i]}{path}"
            body = payload(i) if callable(payload) else payload
            data = None if body is None else json.dumps(body).encode()
            retry_after = None
            try:
                req = urllib.request.Request(url, data=data, headers=self.headers)  # POST when there is data
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    answer = resp.read()
                if server is None:
                    with self._lock:
                        self.answered[i] += 1
                try:
                    return json.loads(answer)
                except ValueError:  # e.g. /v1/load_lora_adapter answers in plain text
                    return {"text": answer.decode("utf-8", "replace")}
            except urllib.error.HTTPError as err:
                message = _error_message(err.read())
                if not retryable_status(err.code):
                    raise UserError(f"server at {url} refused the request (HTTP {err.code}): {message}") from None
                last, retry_after = f"HTTP {err.code}: {message}", err.headers.get("Retry-After")
            except TimeoutError:
                last = f"no answer within `timeout`={self.timeout:g} s"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                last = str(getattr(err, "reason", err)) or type(err).__name__
            finally:
                with self._lock:
                    self.in_flight[i] -= 1
            delay = backoff_delay(attempt, self.backoff, retry_after)
            if len(self.base_urls) > 1:
                last = f"{self.base_urls[i]}: {last}"
                with self._lock:
                    self._down_until[i] = time.monotonic() + delay
                if server is None and self._another_up(i):
                    continue  # the next try goes to another server at once
            if attempt < self.max_retries:
                self._sleep(self.abort, delay)
        raise _Unreachable(last)


def run_window(pool: ThreadPoolExecutor, client: HTTPClient, calls: list[Callable[[], object]],
               who: str, tries: int) -> Iterator[tuple[int, object]]:
    """Run `calls` on `pool` and yield (index, result) as each answer arrives; the pool's size is the
    window: that many requests stay in flight until fewer are left, with no barrier between them.

    The first failure stops the rest (`client.abort`, queued calls cancelled); the answers of the
    requests still in flight then are yielded first, so the caller can save them, and the failure is
    raised last: a server still unreachable after `tries` tries is one UserError naming `who`.
    """
    client.abort.clear()
    futures = {pool.submit(call): i for i, call in enumerate(calls)}
    pending = set(futures)
    error: BaseException | None = None
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=futures.__getitem__):
                if f.cancelled():
                    continue
                if f.exception() is None:
                    yield futures[f], f.result()
                elif error is None:
                    error = f.exception()
                    client.abort.set()  # the others stop retrying; queued ones never start
                    for other in pending:
                        other.cancel()
    finally:  # also when the caller stops early (a KeyboardInterrupt, a failed cache write)
        if pending:
            client.abort.set()
            for f in pending:
                f.cancel()
            wait(pending)
    if error is not None:
        if isinstance(error, _Unreachable):
            raise UserError(f"{who} unreachable after {tries} tries: {error.args[0]}; finished requests are saved, "
                            "re-run to resume") from None
        raise error


def run_concurrently(pool: ThreadPoolExecutor, client: HTTPClient, calls: list[Callable[[], object]],
                     who: str, tries: int) -> list:
    """`run_window`, results in order (all or an error)."""
    results: list = [None] * len(calls)
    for i, result in run_window(pool, client, calls, who, tries):
        results[i] = result
    return results
