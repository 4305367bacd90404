"""Collaborative learning, the pure parts: which configurations run, with which seeds, and
how their answers combine. No model and no I/O here.
"""

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from ...data.extraction import NO_ANSWER

DRAWS = ("paper", "stratified")


@dataclass(frozen=True)
class InferenceConfig:
    model: str  # "base" or "warm"
    shots: int  # in-context examples prepended (ICP)
    copy: int = 1  # 2, 3, ... for a configuration drawn again (w/o ICP): its own name, so its own seeds

    @property
    def name(self) -> str:
        base = f"{self.model}-{self.shots}shot"
        return base if self.copy == 1 else f"{base}#{self.copy}"


def sample_configs(models: list[str], shots: list[int], n: int, seed: int, draw: str = "paper",
                   repeat: bool = False) -> list[InferenceConfig]:
    """n configurations from models x shots, in a seeded order.

    draw="paper": n distinct configurations drawn at random (the paper); one draw fixes the ensemble of the
    run, e.g. seed 42 gives three base configurations, one warm, no 3-shot. draw="stratified": the models take
    turns (n=4: base and warm twice each) and the shot counts are spread over `shots` (n=4: 0, 1, 2, 3 once
    each), the pairing drawn by seed. n > len(models x shots) needs `repeat` (w/o ICP: 4 collaborators, all
    0-shot): configurations then repeat as evenly as n allows, a repeat named `warm-0shot#2`.

    >>> sorted(c.name for c in sample_configs(["base", "warm"], [0, 1], 4, seed=0))  # n = all 4
    ['base-0shot', 'base-1shot', 'warm-0shot', 'warm-1shot']
    >>> sorted(c.name for c in sample_configs(["base", "warm"], [0], 4, seed=0, repeat=True))
    ['base-0shot', 'base-0shot#2', 'warm-0shot', 'warm-0shot#2']
    """
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {', '.join(DRAWS)}, got {draw!r}")
    grid = [(m, s) for m in models for s in shots]
    if n < 1 or (n > len(grid) and not repeat):
        raise ValueError(f"n={n} but only {len(grid)} configurations exist")
    rng = random.Random(seed)
    if draw == "paper":
        pairs = []
        while len(pairs) < n:  # whole shuffled grids, then the remainder without repetition
            pairs += rng.sample(grid, min(len(grid), n - len(pairs)))
    else:
        pairs = _stratified(models, shots, n, rng)
    copies: Counter = Counter()
    out = []
    for m, s in pairs:
        copies[m, s] += 1
        out.append(InferenceConfig(m, s, copies[m, s]))
    return out


def _stratified(models: list[str], shots: list[int], n: int, rng: random.Random) -> list[tuple[str, int]]:
    """Models in a seeded turn order; each takes the shot count it has used least, then the one used least
    overall, ties by a seeded order. So the models split n evenly, the shot counts are spread evenly, and
    no configuration repeats while an unused one of that model is left.

    >>> sorted(_stratified(["base", "warm"], [0, 1, 2, 3], 4, random.Random(0)))
    [('base', 1), ('base', 3), ('warm', 0), ('warm', 2)]
    """
    turn = rng.sample(models, len(models))
    order = rng.sample(shots, len(shots))
    used: Counter = Counter()
    shot_used: Counter = Counter()
    pairs = []
    for i in range(n):
        m = turn[i % len(turn)]
        s = min(order, key=lambda s: (used[m, s], shot_used[s], order.index(s)))
        used[m, s] += 1
        shot_used[s] += 1
        pairs.append((m, s))
    return pairs


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
