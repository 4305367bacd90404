"""Text in, text out: the student, the teacher and the judge behind one call, with a resumable cache.

    teacher = open_chat(cfg.teacher_args, "teacher", batch_size=8)  # an endpoint or a local model
    answers = cached_chat(teacher, keyed, stage_cache(folder, "teacher"), "distill")   # key -> text

`ChatRequest` is one user turn (the prompt) with its sampling settings and seed. A local model
(`LocalChat`: the hf or vllm backend) renders it with its LlamaFactory template, exactly as its
fine-tunes saw it, and loads on the first request that is not in the cache (a resumed stage loads
nothing). An endpoint (`EndpointChat`) sends it to `/v1/chat/completions` of any OpenAI-compatible
server, `concurrency` at a time, with the retries and backoff of backends/http_client.py; the key is
read from the environment variable the config names. `preflight` refuses a missing key or a server
that stays down before any expensive work. A reasoning model (`reasoning: true`) gets its length limit
as `max_completion_tokens` and no temperature; `omit_fields` leaves out any field a model refuses;
`continue_final_message` (vLLM) has the model continue a request's `prefill` as a local model does.
A reply with `null` content, or cut at the length limit (finish_reason "length"), is asked again once
(a cut one with twice the limit); one still incomplete is kept as it came (a null one as "") and marked
`Incomplete`: its cache row records why, and `cached_chat` counts and logs every such reply.

Not handled: streaming; tools; multi-turn conversations (every request is one user turn).
"""

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

from ..backends.base import ENGINE_CHUNK, SORT_WINDOW
from ..backends.http_client import HTTPClient, run_concurrently
from ..errors import UserError
from ..io_utils import JsonlLog
from ..progress import logger
from ..semievol.pseudolabel.collaborate import request_seed  # noqa: F401 (the stages' per-request seeds)
from ..step import run_cached
from .config import ChatModelArguments


@dataclass(frozen=True)
class ChatRequest:
    prompt: str
    seed: int
    temperature: float = 0.0  # 0: greedy
    max_new_tokens: int = 256
    top_p: float = 1.0  # nucleus sampling (1: off)
    # The start of the reply, written for a local model (its template's assistant turn begins with it, and
    # the text returned starts with it); an endpoint gets the prompt alone, which must ask for the format,
    # unless it continues a final assistant message (`continue_final_message`, vLLM).
    prefill: str = ""


class Incomplete(str):
    """A reply that stayed incomplete after its retry: its text as it came ("" for null content) and why."""

    problem: str  # "null": no content;  "length": cut at the length limit

    def __new__(cls, text: str, problem: str):
        self = super().__new__(cls, text)
        self.problem = problem
        return self


class LocalChat:
    """A model on this package's backends (hf, vllm, or a completions server through `openai`)."""

    def __init__(self, backend: str, model: str, template: str, adapter: str | None = None, batch_size: int = 8,
                 backend_kwargs: dict | None = None, name: str = "model", cutoff_len: int | None = None):
        self.backend_name, self.model, self.template, self.adapter = backend, model, template, adapter
        self.cutoff_len = cutoff_len  # the longest prompt (tokens, template and prefill included); None: unchecked
        self.batch_size, self.backend_kwargs, self.name = batch_size, dict(backend_kwargs or {}), name
        self._chat = self._backend = None
        # fixed before the model loads, so a resumed stage cuts its requests into the same chunks
        self.chunk_size = batch_size * SORT_WINDOW if backend == "hf" else max(batch_size, ENGINE_CHUNK)

    @property
    def identity(self) -> dict:
        """What this model's answers depend on (for a step's manifest): weights digests and template."""
        from ..step import model_identity

        return {"model": model_identity(self.model), "adapter": model_identity(self.adapter),
                "template": self.template}

    @property
    def chat_format(self):
        if self._chat is None:
            from ..llamafactory.chat_format import ChatFormat

            self._chat = ChatFormat(self.model, self.template)
        return self._chat

    @property
    def backend(self):
        if self._backend is None:
            from ..step import open_backend

            cfg = SimpleNamespace(backend=self.backend_name, model_name_or_path=self.model,
                                  adapter_name_or_path=self.adapter, batch_size=self.batch_size,
                                  backend_kwargs=lambda: self.backend_kwargs, backend_reason=f"the {self.name}")
            self._backend = open_backend(cfg, self.chat_format)
        return self._backend

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        from ..backends import GenerationRequest

        gens = self.backend.generate([
            GenerationRequest(self._prompt_ids(r), adapter=bool(self.adapter), seed=r.seed,
                              temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)
            for r in requests])
        return [(r.prefill + g.text).strip() for r, g in zip(requests, gens)]

    def check_lengths(self, keyed: list[tuple[str, ChatRequest]], desc: str) -> None:
        """Refuse, before the model loads, prompts longer than `cutoff_len` tokens (one UserError)."""
        if self.cutoff_len is None or not keyed:
            return
        from ..step import check_prompt_lengths

        check_prompt_lengths([(key, SimpleNamespace(prompt_ids=self._prompt_ids(r))) for key, r in keyed],
                             self.cutoff_len, f"{desc} ({self.name})",
                             hint="raise `cutoff_len` (with vllm it also sets the student's `max_model_len`), or "
                                  "lower `max_new_tokens` (the previous stage's answers are quoted in the prompt)")

    def _prompt_ids(self, r: ChatRequest) -> tuple[int, ...]:
        ids = self.chat_format.prompt_ids(r.prompt)
        if r.prefill:
            ids += tuple(self.chat_format.tokenizer.encode(r.prefill, add_special_tokens=False))
        return ids

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text under the model's tokenizer (no special tokens; nothing loads but the tokenizer)."""
        tokenizer = self.chat_format.tokenizer
        return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    def logprobs(self, pairs: list[tuple[str, str]]) -> list[list[float]]:
        """Per-token log-probabilities of each (prompt, answer)'s answer tokens and the template's end of turn
        (the tokens the fine-tunes train on)."""
        from ..backends import ScoreRequest

        encoded = [self.chat_format.encode(p, a) for p, a in pairs]
        return self.backend.score([ScoreRequest(p, r, adapter=bool(self.adapter)) for p, r in encoded])

    def mean_logprob(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The model's own judgment of each (prompt, answer): the mean log-probability of the answer."""
        return [sum(s) / len(s) if s else float("-inf") for s in self.logprobs(pairs)]

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


class EndpointChat:
    """An OpenAI-compatible `/v1/chat/completions` endpoint: a hosted API or `vllm serve`."""

    def __init__(self, args: ChatModelArguments, name: str = "teacher"):
        self.args, self.name = args, name
        self.base_url = args.base_url.rstrip("/")
        self.client = HTTPClient(self.base_url, args.api_key(), timeout=args.timeout, max_retries=args.max_retries,
                                 backoff=args.backoff)
        self.chunk_size = max(64, args.concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self.incomplete: Counter = Counter()  # "null" / "length" -> replies kept incomplete (cached ones included)

    def payload(self, r: ChatRequest, length_scale: int = 1) -> dict:
        """{"model": ..., "messages": [{"role": "user", "content": PROMPT}], "temperature", "max_tokens", "seed"},
        with `max_completion_tokens` for a reasoning model and without the fields the endpoint omits."""
        body = {"model": self.args.model, "messages": [{"role": "user", "content": r.prompt}],
                "temperature": r.temperature, self.args.length_field: r.max_new_tokens * length_scale, "seed": r.seed}
        if r.top_p < 1.0:
            body["top_p"] = r.top_p
        if self.args.continue_final_message and r.prefill:  # vLLM: the model continues the reply's start
            body["messages"].append({"role": "assistant", "content": r.prefill})
            body.update(continue_final_message=True, add_generation_prompt=False)
        for key in self.args.omit_fields:
            body.pop(key, None)
        return body

    def _run_all(self, calls: list[Callable[[], dict]]) -> list[dict]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.args.concurrency, thread_name_prefix=self.name)
        return run_concurrently(self._pool, self.client, calls, f"{self.name} at {self.base_url}",
                                self.args.max_retries + 1)

    def _replies(self, payloads: list[dict]) -> list[tuple[str, str | None]]:
        """(text, problem) per payload: problem "null" (no content), "length" (cut at the limit) or None."""
        out = []
        for a in self._run_all([lambda p=p: self.client.request("/chat/completions", p) for p in payloads]):
            try:
                choice = a["choices"][0]
                content = choice["message"].get("content")
            except (KeyError, IndexError, TypeError, AttributeError):
                raise UserError(f"{self.name} at {self.base_url}: not a chat completion: {str(a)[:200]}") from None
            problem = "null" if content is None else "length" if choice.get("finish_reason") == "length" else None
            out.append((content or "", problem))
        return out

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        """One text per request; a null or length-cut reply is asked again once (a cut one with twice the limit),
        and one still incomplete comes back as `Incomplete`."""
        replies = self._replies([self.payload(r) for r in requests])
        again = [i for i, (_, problem) in enumerate(replies) if problem]
        if again:
            logger.warning(f"{self.name} at {self.base_url}: {len(again)} reply(ies) null or cut at the length "
                           "limit; asking each again once (a cut one with twice the limit)")
            retried = self._replies([self.payload(requests[i], 2 if replies[i][1] == "length" else 1)
                                     for i in again])
            replies = list(replies)
            for i, reply in zip(again, retried):
                replies[i] = reply
        starts = [r.prefill if self.args.continue_final_message else "" for r in requests]
        texts = ["" if problem == "null" else (start + text).strip() for start, (text, problem) in zip(starts, replies)]
        return [Incomplete(text, problem) if problem else text for text, (_, problem) in zip(texts, replies)]

    def check(self) -> None:
        """The server answers `/models` (retried as any request) and, when it lists models, serves ours."""
        models = self._run_all([lambda: self.client.request("/models")])[0].get("data") or []
        served = [m.get("id") for m in models if isinstance(m, dict)]
        if served and self.args.model not in served:
            raise UserError(f"{self.name} at {self.base_url} does not serve {self.args.model!r} (`{self.name}.model`);"
                            f" it serves: {', '.join(map(str, served[:20]))}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def preflight(args: ChatModelArguments, name: str) -> None:
    """Before any expensive work: an endpoint's key must be set and its server must answer."""
    if args.kind != "openai":
        return
    if args.api_key_env and not os.environ.get(args.api_key_env):
        raise UserError(f"`{name}.api_key_env`: the environment variable {args.api_key_env} is not set; export the "
                        f"API key of {args.base_url} in it (or set `{name}.api_key_env=null` for a server without a "
                        "key, such as a local `vllm serve`)")
    chat = EndpointChat(args, name)
    try:
        chat.check()
    finally:
        chat.close()
    logger.info(f"{name}: {args.model} at {args.base_url} answers")


def open_chat(args: ChatModelArguments, name: str, batch_size: int = 8, dtype: str = "auto",
              cutoff_len: int | None = None):
    """The teacher or the judge: an endpoint, or a local model (loaded on its first uncached request; its
    prompts are checked against `cutoff_len`). An endpoint's server checks its own context (an HTTP 400)."""
    if args.kind == "openai":
        return EndpointChat(args, name)
    return LocalChat(args.kind, args.local_model, args.local_template, batch_size=batch_size,
                     backend_kwargs={"dtype": dtype} if args.kind in ("hf", "vllm") else {}, name=name,
                     cutoff_len=cutoff_len)


def chat_identity(args: ChatModelArguments) -> dict:
    """What a teacher's or judge's answers depend on (for a step's manifest)."""
    from ..step import model_identity

    if args.kind == "openai":  # the request settings only when set, so older run folders still resume
        extra = {"reasoning": True} if args.reasoning else {}
        extra.update({"omit_fields": sorted(args.omit_fields)} if args.omit_fields else {})
        extra.update({"continue_final_message": True} if args.continue_final_message else {})
        return {"kind": "openai", "model": args.model, "base_url": args.base_url, **extra}
    return {"kind": args.kind, "model": model_identity(args.local_model), "template": args.local_template}


def cached_chat(chat, keyed: list[tuple[str, ChatRequest]], log: JsonlLog, desc: str) -> dict[str, str]:
    """key -> text for `keyed` ([(key, ChatRequest)] in a fixed order), computing only what `log` lacks;
    a local model's prompts still to compute are checked against its `cutoff_len` first."""
    if hasattr(chat, "check_lengths"):
        cached = {row["key"] for row in log.load()}
        chat.check_lengths([(k, r) for k, r in keyed if k not in cached], desc)
    done = run_cached(chat.generate, keyed, log, _reply_row, chat.chunk_size, desc)
    problems = Counter(done[key]["problem"] for key, _ in keyed if done[key].get("problem"))
    if problems:
        counts = getattr(chat, "incomplete", None)
        if counts is not None:
            counts.update(problems)
        logger.warning(f"{desc}: {sum(problems.values())} of {len(keyed)} replies of the {chat.name} incomplete after "
                       f"a retry ({problems['length']} cut at the length limit, kept cut; {problems['null']} with "
                       f"null content, kept as \"\"): raise `{chat.name}.max_new_tokens`, or see {log.path}")
    return {key: done[key]["text"] for key, _ in keyed}


def _reply_row(text: str) -> dict:
    """A cache row: the text, and why it is incomplete when it is (`Incomplete`)."""
    problem = getattr(text, "problem", None)
    return {"text": str(text), **({"problem": problem} if problem else {})}


def cached_scores(chat: LocalChat, keyed: list[tuple[str, tuple[str, str]]], log: JsonlLog, desc: str) -> dict:
    """key -> mean log-probability of each (prompt, answer) under `chat`'s model, cached like `cached_chat`."""
    done = run_cached(chat.mean_logprob, keyed, log, lambda s: {"score": s}, chat.chunk_size, desc)
    return {key: done[key]["score"] for key, _ in keyed}

