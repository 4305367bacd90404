"""The backend interface: generate a batch of requests, score a batch of (prompt, response) pairs.

Prompts arrive as token ids already rendered with the recipe's LlamaFactory template
(`chat_format.py`), so every backend sees exactly the training format and none adds a BOS.
Each request carries its own seed: a request's sample must not depend on which other
requests share its batch (resume re-batches the unfinished ones).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import UserError

# Requests per call of an engine that batches them itself (the in-process vllm backend): the unit of caching
# and resume. vLLM's scheduler runs up to `max_num_seqs` sequences at once (256, or 1024 on GPUs of 70 GiB or
# more); a call of 4096 keeps that batch full for at least four batches' worth of work before its last requests
# drain, and a kill loses at most one call (minutes of one GPU's work). The openai backend has no such
# call: it streams (`generate_each`), and `run_cached` logs each answer as it arrives.
ENGINE_CHUNK = 4096
# hf: batches per cached chunk. The chunk is what `length_batches` sorts, so a few batches' worth lets it group
# like lengths (a chunk of ICP requests holds 0- to 3-shot prompts); a kill loses at most one chunk.
SORT_WINDOW = 4

# The sampling fields a request sets to "off" (vLLM's names and neutral values, `SamplingParams`): sent
# explicitly by the vllm and openai backends, because `vllm serve` fills a field a request leaves out from the
# model's generation_config.json (e.g. top_k 20, repetition_penalty 1.05). top_k -1 means "all tokens" in
# every vLLM release (0 does too since 0.9, but older ones refuse 0).
SAMPLING_OFF = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                "frequency_penalty": 0.0}


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    adapter: bool  # True: base model + warm adapter; False: the base model alone
    seed: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 64


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class ScoreRequest:
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    adapter: bool = True


class Backend(Protocol):
    """What every backend is built with (by `backends.load_backend`): the model, the adapter, and
    `stop_ids`, `decode` (token ids -> text, from the chat format) and `batch_size`, each used
    where the backend needs it, plus its own `backend_args`."""

    name: str
    chunk_size: int  # requests per cached chunk (see run_cached): hf's batch x SORT_WINDOW, an engine's ENGINE_CHUNK

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order."""

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """Per-token log-probabilities of each `response_ids` given its `prompt_ids`, in order."""

    def close(self) -> None:
        """Free the model (the next step may load another)."""


# A backend that keeps a window of requests in flight (openai) also has `generate_each(requests)` and
# `score_each(requests)`: iterators of (index into requests, result) in the order the answers arrive.
# `step.run_cached` uses them when they exist, so a stage is one window with no chunk barrier.


# ---------------------------------------------------------------------------------------------
# Scoring through prompt_logprobs (vllm in-process and an OpenAI-compatible vLLM server)
# ---------------------------------------------------------------------------------------------

def score_prompt_ids(req: ScoreRequest) -> list[int]:
    """The one prompt that scores a response: prompt + response.  ((0, 5), (7, 1)) -> [0, 5, 7, 1]"""
    if not req.prompt_ids:
        raise UserError("cannot score a response with an empty prompt (its first token has no context)")
    return [*req.prompt_ids, *req.response_ids]


def response_logprobs(prompt_logprobs: Sequence[Any], req: ScoreRequest) -> list[float]:
    """The log-probability of each response token, read from vLLM's `prompt_logprobs`.

    `prompt_logprobs[i]` maps token id -> Logprob (or a float) for position i of prompt + response;
    entry 0 is None. The response starts at position len(prompt_ids):
    prompt (0, 5), response (7,), logprobs [None, {5: -1.0}, {7: -0.5}] -> [-0.5]
    """
    start = len(req.prompt_ids)
    if len(prompt_logprobs) != start + len(req.response_ids):
        raise ValueError(f"expected {start + len(req.response_ids)} prompt_logprobs entries, "
                         f"got {len(prompt_logprobs)}")
    out = []
    for offset, token in enumerate(req.response_ids):
        value = prompt_logprobs[start + offset][token]
        out.append(float(getattr(value, "logprob", value)))
    return out
