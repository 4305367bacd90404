"""What a user reading a long log sees: one configured logger, stage banners, per-stage timers.

    setup_logging()                      # once, by every entry point (idempotent)
    banner("Pseudo-label: collaborate")  # -> `*** Pseudo-label: collaborate ***` on stdout
    timer = Timer()
    with timer("collaborate"): ...       # timer.seconds == {"collaborate": 3.2}

Progress bars come from tqdm (stderr); messages of this package go through the `semievol_lf`
logger to stdout, so they interleave with the banners in the order they happened.
"""

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("semievol_lf")


def setup_logging(level: int = logging.INFO) -> None:
    """Give the `semievol_lf` logger one stdout handler (libraries' loggers are left alone)."""
    if any(getattr(h, "_semievol", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._semievol = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # LlamaFactory/transformers configure the root logger: no second copy


def banner(text: str) -> None:
    """A stage banner: printed even when logging is not set up (a step called from Python)."""
    if logger.handlers:
        logger.info(f"*** {text} ***")
    else:
        print(f"*** {text} ***", flush=True)


class Timer:
    """`with timer("collaborate"): ...` accumulates seconds per stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)
