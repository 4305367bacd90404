"""Inference backends behind one small interface (see `base.py`).

Nothing above this package knows which backend runs: `load_backend` is the only switch, and
importing this package loads neither torch nor vLLM (each backend's module is imported on use).

    backend = load_backend("hf", "saves/base", "saves/warm", stop_ids=(2,), decode=chat.decode, batch_size=16)
"""

import importlib

from .base import Backend, Generation, GenerationRequest, ScoreRequest

# name -> "module:class"; the module is imported only when the backend is loaded
BACKENDS = {
    "hf": "semievol_lf.backends.hf:HFBackend",  # transformers + peft, CPU or one GPU
    "vllm": "semievol_lf.backends.vllm:VLLMBackend",  # one in-process vLLM engine
    "openai": "semievol_lf.backends.openai:OpenAIBackend",  # an OpenAI-compatible server (vllm serve)
}


def load_backend(name: str, model_name_or_path: str, adapter_name_or_path: str | None, **kwargs) -> Backend:
    """Build backend `name`; `kwargs` are the common ones (stop_ids, decode, batch_size) and its `backend_args`."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(model_name_or_path, adapter_name_or_path, **kwargs)


__all__ = ["BACKENDS", "Backend", "Generation", "GenerationRequest", "ScoreRequest", "load_backend"]
