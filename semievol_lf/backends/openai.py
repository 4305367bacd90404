"""The openai backend: generate and score through an OpenAI-compatible server, e.g. `vllm serve`.

    # one terminal, in the vLLM environment (see scripts/serve_vllm.py for the CPU work-arounds):
    vllm serve saves/base --enable-lora --lora-modules warm=saves/warm --max-lora-rank 16 --port 8000
    # the pipeline, in LlamaFactory's environment:
    semievol-lf pseudolabel recipes/pseudolabel_mmlu.yaml backend=openai

    backend = OpenAIBackend("saves/base", "saves/warm", base_url="http://127.0.0.1:8000/v1")
    backend.generate([GenerationRequest(prompt_ids=(0, 17, 42), adapter=True, seed=7)])
    backend.score([ScoreRequest(prompt_ids=(0, 17, 42), response_ids=(99, 1))])  # -> [[-2.3, -0.1]]

Every request is one POST to `/v1/completions` with `prompt` as a list of token ids (rendered
here with the LlamaFactory template, so the server adds no BOS and applies no chat template),
its own `seed`, `temperature`, `top_p`, `max_tokens`, the template's `stop_token_ids`, and every
other sampling field vLLM reads at its "off" value (`SAMPLING_OFF`: top_k -1, min_p 0,
repetition/presence/frequency penalties neutral). `vllm serve` fills a field a request leaves out
from the model's generation_config.json (its `--generation-config auto` default: Qwen2.5-7B-Instruct
would add top_k 20 and repetition_penalty 1.05), so leaving one out would sample differently from
hf and the in-process engine. The
`model` field picks the model: `base_model` (the served name of the base, by default
`model_name_or_path`, which is what `vllm serve PATH` calls it) or the served name of the step's
adapter. That name is found in `/v1/models` by the adapter's folder (vLLM lists each LoRA with its
path as `root`), so a server started with `--lora-modules warm=ADAPTER` is used as is, and another
adapter is never used by mistake. A server started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True is
asked to load an adapter it does not serve yet (`/v1/load_lora_adapter`), so one server can serve
every step of `semievol-lf run` (warm-up, then each round's evolved adapter). For a server that
cannot see this machine's files, name the served adapter with `backend_args.adapter_model`. The
generated token ids come back through vLLM's `return_token_ids`; they end with the EOS id when the
model stopped there, as in the vllm backend.

Scoring sends prompt + response with `max_tokens=1, prompt_logprobs=0` (a vLLM extension) and
reads entry i of `choices[0].prompt_logprobs` ({"<token id>": {"logprob": ...}}, entry 0 null),
exactly as the vllm backend does in-process. (`echo=true, logprobs=0` also works on vLLM, but
returns token strings, not ids, so the token cannot be checked.)

Requests run in a window of `concurrency`: that many are in flight until fewer are left, across a
whole stage (`generate_each` and `score_each` yield each answer as it arrives, and `run_cached`
logs them as they come; there is no chunk that waits for its slowest request). A connection
error, a timeout (`timeout` seconds for one request's answer) or an HTTP 429/5xx is retried
`max_retries` times with exponential backoff (`backoff`, 2 x backoff, ... capped at 30 s, or the
server's Retry-After); then a `UserError` says the server is unreachable. Every answer that came
back has been logged by then, so re-running the same command resumes where it stopped. Any
other HTTP error (a wrong model name, a bad request) is a `UserError` at once, with the
server's message.

Several servers (`base_urls: [URL, URL, ...]` instead of `base_url`), each serving the same base
model: the window stays one window of `concurrency` requests shared by all of them, each request
going to the server with the fewest of this backend's requests in flight (`http_client.HTTPClient`);
a retry goes to another server at once while one is up, so a dead server slows a stage instead of
stopping it. Every server is checked at start (the base model; the step's adapter found or loaded
on each, under each server's own name). One `vllm serve --data-parallel-size N` is simpler and
balances by itself (vLLM's own load balancing, one or several nodes); several servers are for
machines that each serve alone. Answers do not depend on which server gave them (the same model,
the same seed: vLLM's per-request seeds are batch-independent), so resuming over other servers
gives the same cache.

The server's own sampling defaults: `vllm serve` fills only the fields a request leaves out (vLLM 0.32,
`CompletionRequest.to_sampling_params`: the request's value, else the server's default, else vLLM's),
and every field it takes from generation_config.json (`ModelConfig.get_diff_sampling_param`:
temperature, top_p, top_k, min_p and the three penalties) is sent. `max_new_tokens` there is the
exception: older releases (0.7 to 0.10) lowered every request's `max_tokens` to it, and a server
does not say how it was started (`/server_info` does only with VLLM_SERVER_DEV_MODE=1). So an answer
cut at the length limit before `max_tokens` tokens is refused with one error line naming
`--generation-config vllm` (scripts/serve_vllm.py always passes it: vLLM's neutral defaults, nothing
read from the model's file). The model's EOS ids from generation_config.json stop generation in
`vllm serve` and in-process alike, whatever `--generation-config` says.

Does not handle:
- chat-only hosted APIs (`/v1/chat/completions` alone, as OpenAI's current models): they take
  messages, not token ids, so the LlamaFactory template could not be applied, and they return no
  prompt log-probabilities, so `score` (the entropy of selection) is impossible. Such a server
  fails on the first request with its own error; nothing is emulated.
- hosted completion APIs without vLLM's extensions: `prompt_logprobs` is missing from their
  answer, so `score` raises a `UserError`; `seed`, `stop_token_ids` and `return_token_ids` may be
  ignored (then `Generation.token_ids` is empty and sampling is not reproducible).
- streaming, n > 1 per request.
"""

import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import UserError
from ..progress import logger
from .base import (
    ENGINE_CHUNK,
    SAMPLING_OFF,
    Generation,
    GenerationRequest,
    ScoreRequest,
    response_logprobs,
    score_prompt_ids,
)
from .http_client import HTTPClient, backoff_delay, retryable_status, run_window  # noqa: F401 (the retry policy's home)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
SERVE_HINT = "vllm serve BASE --enable-lora --lora-modules warm=ADAPTER --generation-config vllm"


def server_urls(backend_args: dict) -> list[str]:
    """The servers that `backend_args` point at: `base_urls`, else [`base_url`], else the default.

    {"base_urls": ["http://a:8000/v1", "http://b:8000/v1"]} -> both;  {} -> ["http://127.0.0.1:8000/v1"]
    """
    urls = list(backend_args.get("base_urls") or [])
    if urls and backend_args.get("base_url"):
        raise UserError("`backend_args.base_url` and `backend_args.base_urls`: set one "
                        "(`base_urls` lists every server)")
    return urls or [backend_args.get("base_url") or DEFAULT_BASE_URL]
# Requests in flight at once: vLLM's scheduler runs at most `max_num_seqs` sequences per step, 256 by
# default for `vllm serve` (1024 on GPUs of 70 GiB or more); a window that size keeps every batch slot
# of one server busy (fewer leaves slots idle, more only queues in the server). For
# `--data-parallel-size N` or a bigger GPU, raise `backend_args.concurrency` to N x max_num_seqs.
DEFAULT_CONCURRENCY = 256


# ---------------------------------------------------------------------------------------------
# Pure request building and answer parsing (no network)
# ---------------------------------------------------------------------------------------------

def served_model(adapter: bool, base_model: str, adapter_model: str | None) -> str:
    """The `model` field of a request: ("warm" for the adapter, the base's name otherwise).

    (True, "saves/base", "warm") -> "warm";  (False, "saves/base", "warm") -> "saves/base"
    """
    if not adapter:
        return base_model
    if adapter_model is None:
        raise UserError("a request asks for the adapter, but the openai backend was built without one "
                        "(set `adapter_name_or_path`)")
    return adapter_model


def _same_path(a: str | None, b: str) -> bool:
    if not a:
        return False
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # not a path on this machine
        return False


def served_adapter(models: list[dict], adapter_path: str) -> str | None:
    """The served name of the LoRA loaded from `adapter_path`, from a `/v1/models` answer's `data`.

    [{"id": "base", "root": "base"}, {"id": "warm", "root": "saves/warm", "parent": "base"}], "saves/warm"
    -> "warm";  the same with "saves/other" -> None
    """
    for model in models:
        if model.get("parent") is not None and _same_path(model.get("root"), adapter_path):
            return model.get("id")
    return None


def adapter_load_name(adapter_path: str) -> str:
    """The name an adapter is loaded under at run time: stable for its folder, unique per folder."""
    return "semievol-" + hashlib.sha256(os.path.abspath(adapter_path).encode()).hexdigest()[:12]


def generation_payload(req: GenerationRequest, model: str, stop_ids: Sequence[int] = ()) -> dict:
    """The JSON body of `/v1/completions` for one generation request.

    GenerationRequest((0, 5), adapter=True, seed=7, temperature=0.7, max_new_tokens=8), "warm" ->
    {"model": "warm", "prompt": [0, 5], "seed": 7, "temperature": 0.7, "top_p": 1.0, "max_tokens": 8,
     "n": 1, "return_token_ids": True, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
     "presence_penalty": 0.0, "frequency_penalty": 0.0}
    """
    payload = {"model": model, "prompt": list(req.prompt_ids), "seed": req.seed, "temperature": req.temperature,
               "top_p": req.top_p, "max_tokens": req.max_new_tokens, "n": 1, "return_token_ids": True,
               **SAMPLING_OFF}
    if stop_ids:
        payload["stop_token_ids"] = list(stop_ids)
    return payload


def score_payload(req: ScoreRequest, model: str) -> dict:
    """The JSON body that scores `response_ids` after `prompt_ids`: one prompt, one dummy new token
    (greedy; the sampling fields are sent at their "off" values all the same, as for generation).

    ScoreRequest((0, 5), (7, 1)), "warm" ->
    {"model": "warm", "prompt": [0, 5, 7, 1], "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
     "prompt_logprobs": 0, "top_k": -1, "min_p": 0.0, ...}
    """
    return {"model": model, "prompt": score_prompt_ids(req), "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
            "prompt_logprobs": 0, **SAMPLING_OFF}


def parse_generation(answer: dict, max_tokens: int | None = None, url: str = "the server") -> Generation:
    """The Generation in a `/v1/completions` answer: its text and, from vLLM, its token ids.

    An answer that stopped at the length limit (`finish_reason` "length") with fewer than the requested
    `max_tokens` tokens was cut by the server's own default (generation_config.json's `max_new_tokens`
    under `vllm serve`'s `--generation-config auto`): a UserError, as the answers would differ from
    hf's and the in-process engine's.
    """
    choice = answer["choices"][0]
    token_ids = tuple(choice.get("token_ids") or ())
    if (max_tokens is not None and choice.get("finish_reason") == "length" and token_ids
            and len(token_ids) < max_tokens):
        raise UserError(f"server at {url} cut an answer at {len(token_ids)} tokens where `max_tokens` was "
                        f"{max_tokens}: it lowers the limit, from the model's generation_config.json (`vllm serve` "
                        "without `--generation-config vllm`) or by a `--max-model-len` shorter than prompt + "
                        "`max_tokens`; restart it with `--generation-config vllm` (scripts/serve_vllm.py passes it) "
                        "and the recipe's `max_model_len`")
    return Generation(text=choice["text"], token_ids=token_ids)


def parse_score(answer: dict, req: ScoreRequest, url: str = "the server") -> list[float]:
    """The log-probability of each response token in an answer to `score_payload`.

    prompt (0, 5), response (7,): prompt_logprobs [null, {"5": {"logprob": -1.0}}, {"7": {"logprob": -0.5}}]
    -> [-0.5]. The keys are token ids as strings (JSON); entry 0 is null (no context).
    """
    entries = answer["choices"][0].get("prompt_logprobs")
    if entries is None:
        raise UserError(f"scoring needs a server that returns prompt logprobs (vLLM's `prompt_logprobs`); {url} "
                        f"returned none. Serve the model with `{SERVE_HINT}`, or use backend hf or vllm")
    as_ids = [None if e is None else {int(tok): float(v["logprob"] if isinstance(v, dict) else v)
                                      for tok, v in e.items()} for e in entries]
    return response_logprobs(as_ids, req)


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------

class OpenAIBackend:
    """Generate and score through an OpenAI-compatible `/v1/completions` server (see the module docstring).

    `adapter_name_or_path` is the adapter's folder (the pipeline fingerprints it to know when results
    are stale); at start its served name is looked up in `/v1/models`, or the adapter is loaded,
    unless `adapter_model` names it. With no adapter, requests for the adapter are refused. `api_key`
    defaults to $OPENAI_API_KEY (`vllm serve --api-key`); none is sent when neither is set.
    `sleep_while_training`: `semievol-lf run` puts the server to sleep around each fine-tune
    (`backends.while_training`, sleep.py); a backend that finds the server asleep (a run stopped
    during a fine-tune) wakes it before its first request.
    """

    name = "openai"

    def __init__(self, model_name_or_path: str, adapter_name_or_path: str | None = None, *,
                 base_url: str | None = None, base_urls: Sequence[str] | None = None, api_key: str | None = None,
                 base_model: str | None = None, adapter_model: str | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, max_retries: int = 5, timeout: float = 600.0,
                 backoff: float = 1.0, stop_ids: Sequence[int] = (), check_models: bool = True, batch_size: int = 1,
                 decode: Any = None, sleep_while_training: bool = False, **unknown: Any):
        if unknown:
            known = ["base_url", "base_urls", "api_key", "base_model", "adapter_model", "concurrency", "max_retries",
                     "timeout", "backoff", "check_models", "sleep_while_training"]
            raise UserError(f"unknown `backend_args` for the openai backend: {', '.join(sorted(unknown))}. "
                            f"Known: {', '.join(known)}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise UserError("`backend_args`: the openai backend needs concurrency >= 1, max_retries >= 0, timeout > 0")
        urls = server_urls({"base_url": base_url, "base_urls": base_urls})
        if sleep_while_training and base_urls:
            raise UserError("`backend_args.sleep_while_training` puts the one server of `base_url` to sleep; with "
                            "`base_urls`, run the servers on other GPUs than the fine-tunes")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.base_url = self.base_urls[0]
        self.base_model = base_model or str(model_name_or_path)
        self.adapter_path = str(adapter_name_or_path) if adapter_name_or_path else None
        self.loaded: dict[int, str] = {}  # server index -> the adapter this backend loaded there (unloaded by `close`)
        self.adapter_model = adapter_model if adapter_name_or_path else None
        self.adapter_models: list[str | None] = [self.adapter_model] * len(self.base_urls)  # its name per server
        self.stop_ids = tuple(stop_ids)  # `decode` is unused: the server detokenizes
        self.chunk_size = max(batch_size, ENGINE_CHUNK)  # only for callers that batch: run_cached streams
        where = (f"{self.base_url}," if len(urls) == 1 else
                 f"{len(urls)} servers ({', '.join(self.base_urls)}) sharing one window of")
        self.description = (f"openai backend: {where} {concurrency} requests in flight (the server chose the "
                            "dtype and memory settings)")
        self.who = (f"server at {self.base_url}" if len(urls) == 1 else f"servers at {', '.join(self.base_urls)}")
        self.concurrency = concurrency
        self.client = HTTPClient(self.base_urls, api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
                                 timeout=timeout, max_retries=max_retries, backoff=backoff)
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(concurrency, thread_name_prefix="openai")
        if sleep_while_training:  # a sleeping server queues requests until they time out: wake it first
            from .sleep import ServerSleep

            ServerSleep(self.base_url, api_key, max_retries=max_retries, backoff=backoff).wake_if_sleeping()
        if check_models:
            self.check_models()
        elif self.adapter_path and self.adapter_model is None:
            self.adapter_model = "warm"  # unchecked: the name `--lora-modules warm=ADAPTER` gives it
            self.adapter_models = ["warm"] * len(self.base_urls)

    def check_models(self) -> None:
        """Refuse to start unless every server serves the base and this step's adapter; find (or load) the
        adapter's served name on each. A server that fails the check unloads what the others loaded."""
        try:
            for i in range(len(self.base_urls)):
                self.adapter_models[i] = self._check_server(i)
        except BaseException:
            self.close()
            raise
        self.adapter_model = self.adapter_models[0]

    def _check_server(self, i: int) -> str | None:
        url = self.base_urls[i]
        models = self._get_models(i)
        served = [m.get("id") for m in models]
        if self.base_model not in served:
            raise UserError(f"server at {url} does not serve {self.base_model!r} "
                            "(`backend_args.base_model`); "
                            f"it serves: {', '.join(map(str, served)) or 'nothing'}. Start it with `{SERVE_HINT}`")
        if self.adapter_path is None:
            return None
        if self.adapter_model is not None:  # named by the user: trusted, but it must be served
            if self.adapter_model not in served:
                raise UserError(f"server at {url} does not serve {self.adapter_model!r} "
                                f"(`backend_args.adapter_model`); it serves: {', '.join(map(str, served))}. "
                                f"Start it with `{SERVE_HINT}`")
            return self.adapter_model
        return served_adapter(models, self.adapter_path) or self._load_adapter(i, models)

    def _get_models(self, i: int) -> list[dict]:
        return self._run_all([lambda: self.client.request("/models", server=i)])[0].get("data", [])

    def _load_adapter(self, i: int, models: list[dict]) -> str:
        """Ask server `i` to load the adapter (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""
        url = self.base_urls[i]
        name = adapter_load_name(self.adapter_path)
        adapters = [f"{m.get('id')}={m.get('root')}" for m in models if m.get("parent") is not None]
        payload = {"lora_name": name, "lora_path": os.path.abspath(self.adapter_path)}
        try:
            self._run_all([lambda: self.client.request("/load_lora_adapter", payload, server=i)])
        except UserError as err:
            raise UserError(
                f"server at {url} does not serve the adapter {self.adapter_path} (it serves "
                f"{', '.join(adapters) or 'no adapter'}) and could not load it: {err}. Start the server with "
                f"`--lora-modules warm={self.adapter_path}`, or with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True so that "
                "each step loads its own adapter") from None
        self.loaded[i] = name
        if served_adapter(self._get_models(i), self.adapter_path) != name:
            raise UserError(f"server at {url} accepted the adapter {self.adapter_path} but does not list it")
        return name

    def _window(self, calls: list[Callable[[], Any]]) -> Iterator[tuple[int, Any]]:
        """(index, answer) as each call's answer arrives, `concurrency` in flight; the first failure stops the rest."""
        if self._pool is None:
            raise RuntimeError("the openai backend is closed")
        return run_window(self._pool, self.client, calls, self.who, self.client.max_retries + 1)

    def _run_all(self, calls: list[Callable[[], Any]]) -> list:
        """The answers of `calls`, in order."""
        return _in_order(self._window(calls), len(calls))

    def _post_all(self, payloads: list[dict], adapters: list[bool]) -> Iterator[tuple[int, dict]]:
        """POST each payload to `/completions` on whichever server is least busy, its `model` field the
        base's name or the adapter's name on that server."""
        def call(payload: dict, adapter: bool) -> Callable[[], dict]:
            return lambda: self.client.request("/completions", lambda server: {
                **payload, "model": served_model(adapter, self.base_model, self.adapter_models[server])})

        return self._window([call(p, a) for p, a in zip(payloads, adapters)])

    def generate_each(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """(index into `requests`, Generation) in the order the answers arrive."""
        payloads = [generation_payload(r, self.base_model, self.stop_ids) for r in requests]
        for i, answer in self._post_all(payloads, [r.adapter for r in requests]):
            yield i, parse_generation(answer, requests[i].max_new_tokens, self.who)

    def score_each(self, requests: list[ScoreRequest]) -> Iterator[tuple[int, list[float]]]:
        """(index into `requests`, per-token log-probabilities) in the order the answers arrive."""
        payloads = [score_payload(r, self.base_model) for r in requests]
        for i, answer in self._post_all(payloads, [r.adapter for r in requests]):
            yield i, parse_score(answer, requests[i], self.who)

    def answers_per_server(self) -> dict[str, int]:
        """How many generations and scores each server answered so far.  -> {"http://a:8000/v1": 130, ...}"""
        return dict(zip(self.base_urls, self.client.answered))

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return _in_order(self.generate_each(requests), len(requests))

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        return _in_order(self.score_each(requests), len(requests))

    def close(self) -> None:
        """Unload the adapter this backend loaded (a step's adapter must not linger in the server's LoRA
        slots) and stop the worker threads; the server keeps running. Later calls raise."""
        for i, name in sorted(self.loaded.items()) if self._pool is not None else ():
            try:
                self._run_all([lambda i=i, name=name: self.client.request("/unload_lora_adapter", {"lora_name": name},
                                                                          server=i)])
            except UserError as err:  # the results are safe; a lingering adapter only takes a slot
                print(f"warning: could not unload adapter {name} from {self.base_urls[i]}: {err}", file=sys.stderr)
        self.loaded = {}
        if len(self.base_urls) > 1 and self._pool is not None and any(self.client.answered):
            spread = ", ".join(f"{url} {n}" for url, n in self.answers_per_server().items())
            logger.info(f"openai backend: answers per server: {spread}")
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _in_order(each: Iterator[tuple[int, Any]], n: int) -> list:
    out: list = [None] * n
    for i, result in each:
        out[i] = result
    return out
