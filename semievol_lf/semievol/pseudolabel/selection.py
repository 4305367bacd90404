"""Adaptive selection (paper Eq. 6-8), pure functions.

Entropy H(y) is the mean per-token negative log-likelihood of the pseudo-response under the
warm model given the task prompt; tau is the theta-percentile of H over all pseudo-responses
whose answer could be extracted; a sample is kept when H <= tau.
"""

import math


def mean_nll(token_logprobs: list[float]) -> float:
    """Eq. 6: `mean_nll([-0.5, -1.5]) == 1.0`. An empty response has no evidence: +inf."""
    if not token_logprobs:
        return math.inf
    return -sum(token_logprobs) / len(token_logprobs)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 1].

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    if not values:
        raise ValueError("percentile of an empty list")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def select(entropies: list[float], theta: float) -> tuple[float | None, list[bool]]:
    """Eq. 7-8: (tau, keep flags). Ties at tau are kept, so theta=1.0 keeps everything and a
    set of equal entropies is kept whole; an empty set gives tau None.

    >>> select([0.1, 0.4, 0.2, 0.3], 0.5)
    (0.25, [True, False, True, False])
    """
    finite = [h for h in entropies if math.isfinite(h)]
    if not finite:
        return None, [False] * len(entropies)
    tau = percentile(finite, theta)
    return tau, [h <= tau for h in entropies]
