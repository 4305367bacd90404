"""Inference backends behind one small interface (see `base.py`).

Nothing above this package knows which backend runs; `load_backend` is the only switch.
"""

from .base import Backend, Generation, GenerationRequest, ScoreRequest, load_backend

__all__ = ["Backend", "Generation", "GenerationRequest", "ScoreRequest", "load_backend"]
