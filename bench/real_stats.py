"""The statistics of bench/real.py's `fpb` experiment (project issue 21): pure functions, no I/O.

Per-row correctness is a 0/1 vector over the test rows, in the test file's order. Run seeds are
pooled by averaging per row (`pool_seeds`): row i's value is the share of the seeds that answered it
right, so the pooled mean is the mean accuracy over the seeds, and a bootstrap over the rows gives the
interval of that mean for a new draw of test rows of this size (the test-set part of the uncertainty;
the seed-to-seed part is shown beside it as the per-seed values). Intervals are percentile bootstraps
of the mean (seeded: the same numbers every time); a paired interval resamples the same rows for both
vectors, so a difference is measured on the same questions.

Not handled: clustered or stratified resampling, and the seed-to-seed variance inside the interval.
"""

import math
import statistics
from collections.abc import Sequence

RESAMPLES = 2000
LEVEL = 0.95


def pool_seeds(vectors: Sequence[Sequence[float]]) -> list[float]:
    """Per-row mean over the run seeds' correctness vectors (all of one length: the same test rows).

    >>> pool_seeds([[1, 0, 1, 1], [1, 1, 0, 1]])
    [1.0, 0.5, 0.5, 1.0]
    """
    if not vectors:
        raise ValueError("no vectors to pool")
    lengths = {len(v) for v in vectors}
    if len(lengths) != 1:
        raise ValueError(f"the seeds' vectors cover different test rows (lengths {sorted(lengths)})")
    return [statistics.fmean(col) for col in zip(*vectors)]


def _resampled_means(values: Sequence[float], resamples: int, seed: int):
    import numpy as np

    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    return x[idx].mean(axis=1)


def _interval(means, level: float) -> tuple[float, float]:
    import numpy as np

    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile-bootstrap interval over the rows.

    A constant vector has no spread; 0/1 rows give an interval around their share of ones:

    >>> bootstrap_ci([1, 1, 1, 1])
    (1.0, 1.0, 1.0)
    >>> mean, lo, hi = bootstrap_ci([1] * 60 + [0] * 40)
    >>> mean, 0.49 < lo < 0.53, 0.67 < hi < 0.71   # the normal approximation: 0.6 ± 1.96 * 0.049
    (0.6, True, True)
    """
    if not values:
        return math.nan, math.nan, math.nan
    lo, hi = _interval(_resampled_means(values, resamples, seed), level)
    return statistics.fmean(values), lo, hi


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                        level: float = LEVEL) -> tuple[float, float, float]:
    """(mean of a - b, low, high): the difference of two vectors over the same rows, resampled together.

    >>> paired_bootstrap_ci([1, 0, 1, 0], [1, 0, 1, 0])   # the same answers: no difference at all
    (0.0, 0.0, 0.0)
    >>> paired_bootstrap_ci([1, 1, 1, 1], [0, 0, 0, 0])   # right where the other is wrong, on every row
    (1.0, 1.0, 1.0)
    """
    if len(a) != len(b):
        raise ValueError(f"a paired interval needs the same rows ({len(a)} vs {len(b)})")
    return bootstrap_ci([x - y for x, y in zip(a, b)], resamples, seed, level)


def entropy_deciles(pairs: Sequence[tuple[float | None, float]], bins: int = 10) -> list[dict]:
    """Pseudo-label accuracy by entropy decile: `pairs` are (entropy, correct) per pseudo-label (entropy None:
    no extractable answer, left out); sorted by entropy (stably: pairs of equal entropy keep their order, so two
    calls on the same rows group them alike) and cut into `bins` groups of near-equal size (the first ones one
    larger). Returns one {"lo", "hi", "n", "acc"} per non-empty group, lowest entropy first; `acc` is the mean of
    the second items (another 0/1 flag, such as kept, gives its share).

    >>> [d["acc"] for d in entropy_deciles([(0.1 * i, float(i < 10)) for i in range(20)], bins=4)]
    [1.0, 1.0, 0.0, 0.0]
    >>> [d["n"] for d in entropy_deciles([(float(i), 1.0) for i in range(23)])]
    [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    """
    scored = sorted(((h, ok) for h, ok in pairs if h is not None and math.isfinite(h)), key=lambda p: p[0])
    out, start = [], 0
    for i in range(bins):
        size = len(scored) // bins + (i < len(scored) % bins)
        group = scored[start:start + size]
        start += size
        if group:
            out.append({"lo": group[0][0], "hi": group[-1][0], "n": len(group),
                        "acc": statistics.fmean(ok for _, ok in group)})
    return out


def share(flags: Sequence[bool]) -> float:
    """The share of true flags (nan for none).

    >>> share([True, False, False, False])
    0.25
    """
    return sum(map(bool, flags)) / len(flags) if flags else math.nan


def loss_summary(log_rows: Sequence[dict]) -> dict:
    """A fine-tune's loss curve from LlamaFactory's trainer_log.jsonl rows (or the trainer state's
    `log_history`): the logged training losses in order, the first and the last, and the steps.

    >>> loss_summary([{"current_steps": 5, "loss": 1.45}, {"current_steps": 10, "loss": 0.9},
    ...               {"current_steps": 48, "loss": 0.17, "total_steps": 48}])
    {'first': 1.45, 'last': 0.17, 'steps': 48, 'losses': [1.45, 0.9, 0.17]}
    """
    losses = [float(r["loss"]) for r in log_rows if r.get("loss") is not None]
    steps = [r.get("current_steps", r.get("step")) for r in log_rows]
    steps = [s for s in steps if s is not None]
    return {"first": losses[0] if losses else None, "last": losses[-1] if losses else None,
            "steps": max(steps) if steps else None, "losses": losses}
