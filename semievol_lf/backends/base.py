"""The backend interface: generate a batch of requests, score a batch of (prompt, response) pairs.

Prompts arrive as token ids already rendered with the recipe's LlamaFactory template
(`chat_format.py`), so every backend sees exactly the training format and none adds a BOS.
Each request carries its own seed: a request's sample must not depend on which other
requests share its batch (resume re-batches the unfinished ones).
"""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    adapter: bool  # True: base model + warm adapter; False: the base model alone
    seed: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    choices: tuple[str, ...] | None = None  # constrain the output to one of these strings, where supported


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
    name: str

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order."""

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """Per-token log-probabilities of each `response_ids` given its `prompt_ids`, in order."""

    def close(self) -> None:
        """Free the model (the next step may load another)."""


def load_backend(name: str, model_name_or_path: str, adapter_name_or_path: str | None, **kwargs) -> Backend:
    """`name` is one of hf, vllm, openai; heavy imports happen here, not at package import."""
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(model_name_or_path, adapter_name_or_path, **kwargs)
    if name == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(model_name_or_path, adapter_name_or_path, **kwargs)
    if name == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(model_name_or_path, adapter_name_or_path, **kwargs)
    raise ValueError(f"unknown backend {name!r}; choose hf, vllm or openai")
