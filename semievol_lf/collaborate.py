"""Collaborative learning, the pure parts: which configurations run, with which seeds, and
how their answers combine. No model and no I/O here.
"""

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from .extraction import NO_ANSWER


@dataclass(frozen=True)
class InferenceConfig:
    model: str  # "base" or "warm"
    shots: int  # in-context examples prepended (ICP)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.shots}shot"


def sample_configs(models: list[str], shots: list[int], n: int, seed: int) -> list[InferenceConfig]:
    """n configurations drawn without repetition from models x shots, in a seeded order.

    >>> sorted(c.name for c in sample_configs(["base", "warm"], [0, 1], 4, seed=0))  # n = all 4
    ['base-0shot', 'base-1shot', 'warm-0shot', 'warm-1shot']
    """
    grid = [InferenceConfig(m, s) for m in models for s in shots]
    if not 1 <= n <= len(grid):
        raise ValueError(f"n={n} but only {len(grid)} configurations exist")
    return random.Random(seed).sample(grid, n)


def request_seed(seed: int, *parts: object) -> int:
    """A per-request sampling seed that depends only on the run seed and the request's identity
    (so it is the same whatever batch or order the request runs in)."""
    blob = "\x1f".join(map(str, (seed, *parts))).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


def agreed_answer(answers: list[str]) -> str | None:
    """The answer when all n answers are the same valid answer, else None."""
    if answers and answers[0] != NO_ANSWER and all(a == answers[0] for a in answers):
        return answers[0]
    return None


def majority_answer(answers: list[str]) -> str:
    """Most frequent valid answer; ties go to the answer seen first. NO_ANSWER if none is valid.

    >>> majority_answer(["B", "A", "A", "B", "[no answer]"])
    'B'
    """
    valid = [a for a in answers if a != NO_ANSWER]
    if not valid:
        return NO_ANSWER
    counts = Counter(valid)
    best = max(counts.values())
    return next(a for a in valid if counts[a] == best)
