"""Inference backends behind one small interface (see `base.py`).

Nothing above this package knows which backend runs: `load_backend` is the only switch, and
importing this package loads neither torch nor vLLM (each backend's module is imported on use).

    backend = load_backend("hf", "saves/base", "saves/warm", stop_ids=(2,), decode=chat.decode, batch_size=16)
"""

import importlib
from contextlib import AbstractContextManager, nullcontext

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


def while_training(name: str, backend_args: dict, what: str = "a fine-tune runs") -> AbstractContextManager:
    """What backend `name` does with the GPU while `semievol-lf run` fine-tunes (entered around the
    `llamafactory-cli train` subprocess only).

    hf and vllm hold nothing then: they run in the run's own process, and every step closes its backend
    before it returns (hf drops the model and empties the CUDA cache, vllm shuts its engine down).
    openai talks to a server that outlives the steps: with `sleep_while_training` it is put to sleep
    (vLLM sleep mode, level 1) and woken afterwards; without it, it keeps its GPU memory, so it must
    run on other GPUs than the fine-tunes (README, "GPU memory").
    """
    if name == "openai" and backend_args.get("sleep_while_training"):
        from .openai import DEFAULT_BASE_URL
        from .sleep import ServerSleep

        return ServerSleep.for_backend({"base_url": DEFAULT_BASE_URL, **backend_args}).asleep(what)
    return nullcontext()


__all__ = ["BACKENDS", "Backend", "Generation", "GenerationRequest", "ScoreRequest", "load_backend", "while_training"]
