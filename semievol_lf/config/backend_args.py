"""Typed `backend_args`: what each inference backend's constructor accepts, checked before anything loads.

The recipe key stays a plain mapping (`backend_args: {concurrency: 16}`, `backend_args.concurrency=16`);
`check_backend_args` validates it against the dataclass of the chosen backend and returns it with
its values coerced (an int timeout becomes a float). Only the keys the user set reach the backend,
so the defaults below are the backends' own, shown by `--help`. The fields mirror the keyword
arguments of `semievol_lf.backends.{hf,vllm,openai}` (a test keeps them in step).
"""

from dataclasses import dataclass, field, fields

from .parser import build_nested

# The vLLM backend passes these on to `vllm.LLM`; engine keyword arguments not listed here go in
# `engine_kwargs`, which vLLM itself checks when it starts.


@dataclass
class HFBackendArguments:
    """backend=hf: transformers (+ peft) in this process."""

    device: str | None = field(
        default=None, metadata={"help": "torch device, e.g. cuda:1; default: cuda when available, else cpu."})


@dataclass
class VLLMBackendArguments:
    """backend=vllm: one vLLM engine in this process (`vllm.LLM`), LoRA enabled when there is an adapter."""

    kv_cache_memory_bytes: int | None = field(
        default=None, metadata={"help": "KV cache size in bytes instead of `gpu_memory_utilization` (CPU builds)."})
    engine_kwargs: dict = field(default_factory=dict, metadata={
        "help": "Any other `vllm.LLM` keyword arguments, e.g. {enforce_eager: true}; vLLM checks them when it starts."})

    def __post_init__(self):
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 1:
            raise ValueError(f"`backend_args.kv_cache_memory_bytes` must be >= 1, got {self.kv_cache_memory_bytes}")
        typed = {f.name for f in fields(self)}
        for key in self.engine_kwargs:
            if key in typed:
                raise ValueError(f"`backend_args.engine_kwargs.{key}`: set `backend_args.{key}` instead")


@dataclass
class OpenAIBackendArguments:
    """backend=openai: an OpenAI-compatible server (vLLM's `vllm serve`) over HTTP."""

    base_url: str | None = field(
        default=None, metadata={"help": "The server's /v1 URL; default: http://127.0.0.1:8000/v1."})
    base_urls: list[str] | None = field(default=None, metadata={
        "help": "Several servers of the same model instead of `base_url`, e.g. [http://node1:8000/v1, "
                "http://node2:8000/v1]: one window of `concurrency` requests shared by all, each request to the "
                "least busy server. One `vllm serve --data-parallel-size N` is simpler where it fits."})
    api_key: str | None = field(default=None, metadata={"help": "Bearer token; default: $OPENAI_API_KEY."})
    base_model: str | None = field(
        default=None, metadata={"help": "The base model's served name; default: `model_name_or_path`."})
    adapter_model: str | None = field(default=None, metadata={
        "help": "The warm adapter's served name; default: found in /v1/models by the adapter's folder."})
    concurrency: int = field(default=256, metadata={
        "help": "Requests in flight at once, kept up across a whole stage (a window, not chunks). 256 is vLLM's "
                "default `max_num_seqs` for `vllm serve` (sequences one engine batches per step; 1024 on an H100, H200 "
                "or larger, 128 on the CPU): fewer leaves batch slots idle, more only queues in the server. With "
                "`--data-parallel-size N`, N servers in `base_urls` or a larger `--max-num-seqs`, raise it to match."})
    max_retries: int = field(default=5, metadata={"help": "Retries of a failed request, with backoff."})
    timeout: float = field(default=600.0, metadata={
        "help": "Seconds to wait for one answer. In a full window an answer waits for its batch-mates (minutes on "
                "a slow server); a dead server is found at once (connection refused), this bounds a hung one."})
    backoff: float = field(
        default=1.0, metadata={"help": "First retry delay in seconds, doubled each retry (at most 30 s)."})
    check_models: bool = field(
        default=True, metadata={"help": "Check /v1/models for the base model and adapter before the first request."})
    sleep_while_training: bool = field(default=False, metadata={
        "help": "`semievol-lf run`: put the vLLM server to sleep (level 1: GPU memory freed, weights kept in CPU "
                "memory) during each fine-tune on the same GPU, and wake it after; the server needs "
                "`scripts/serve_vllm.py --sleep-mode` (CUDA/ROCm only)."})

    def __post_init__(self):
        if self.base_url and self.base_urls:
            raise ValueError("`backend_args.base_url` and `backend_args.base_urls`: set one (`base_urls` lists every "
                             "server)")
        if self.base_urls is not None and len(set(self.base_urls)) != len(self.base_urls):
            raise ValueError(f"`backend_args.base_urls` lists a server twice: {self.base_urls}")
        if self.sleep_while_training and self.base_urls:
            raise ValueError("`backend_args.sleep_while_training` puts the one server of `base_url` to sleep; with "
                             "`base_urls`, run the servers on other GPUs than the fine-tunes")
        if self.concurrency < 1:
            raise ValueError(f"`backend_args.concurrency` must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"`backend_args.max_retries` must be >= 0, got {self.max_retries}")
        if self.timeout <= 0:
            raise ValueError(f"`backend_args.timeout` must be > 0, got {self.timeout}")
        if self.backoff < 0:
            raise ValueError(f"`backend_args.backoff` must be >= 0, got {self.backoff}")


BACKEND_ARGUMENTS: dict[str, type] = {
    "hf": HFBackendArguments, "vllm": VLLMBackendArguments, "openai": OpenAIBackendArguments,
}


def check_backend_args(backend: str, values: dict) -> dict:
    """`values` checked against `backend`'s arguments, coerced; raises ValueError naming `backend_args.KEY`.

    ("openai", {"timeout": 5}) -> {"timeout": 5.0}; ("hf", {"base_url": "x"}) -> ValueError
    """
    typed = build_nested(BACKEND_ARGUMENTS[backend], values, "backend_args", f" for backend={backend}")
    return {key: getattr(typed, key) for key in values}


def backend_kwargs(backend: str, values: dict) -> dict:
    """The backend constructor's keyword arguments: `values` with vLLM's `engine_kwargs` spread out."""
    kwargs = check_backend_args(backend, values)
    kwargs.update(kwargs.pop("engine_kwargs", None) or {})
    return kwargs
