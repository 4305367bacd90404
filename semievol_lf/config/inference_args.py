"""How a step runs its requests (backend, dtype, batching, lengths, GPU memory, seed) and where it writes.

`backend: auto` picks the fastest backend this environment has: vllm when it is importable, else
hf. The GPU settings (`gpu_memory_utilization`, `tensor_parallel_size`, `max_model_len`) are the
vllm engine's; the hf backend uses one device and the openai backend the server's own settings.
"""

import importlib.util
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from .backend_args import BACKEND_ARGUMENTS, backend_kwargs, check_backend_args
from .base import Arguments


@dataclass
class InferenceArguments(Arguments):
    SECTION: ClassVar[str] = "inference"

    backend: Literal["auto", "hf", "vllm", "openai"] = field(default="hf", metadata={
        "help": "Inference backend; auto: vllm when it is importable here (the fastest on a GPU), else hf."})
    backend_args: dict = field(default_factory=dict, metadata={
        "help": "Keyword arguments of the backend, checked per backend (listed at the end of --help), "
                "e.g. {base_url: ...} for openai, {tensor_parallel_size: 4} for vllm."})
    batch_size: int = field(default=16, metadata={"help": "Requests per backend call (hf); vllm takes all."})
    max_new_tokens: int = field(default=256, metadata={"help": "Generation length limit."})
    seed: int = field(default=42, metadata={"help": "Seed of every random choice of the step."})
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(default="auto", metadata={
        "help": "Weights' dtype (hf, vllm); auto: bfloat16 on a GPU that has it (hf: float16 on older GPUs; vllm: "
                "the model's own dtype), float32 on the CPU."})
    cutoff_len: int = field(default=2048, metadata={
        "help": "Longest prompt in tokens (k-shot ICP prompts, self-justify prompts holding n responses); a longer "
                "one is an error naming the question, never silently cut."})
    max_model_len: int | None = field(default=None, metadata={
        "help": "vllm: context length, which sizes the KV cache; default `cutoff_len` + `max_new_tokens`, as "
                "LlamaFactory's vLLM engine derives it (a model's own, e.g. Llama-3.1's 131072, rarely fits)."})
    gpu_memory_utilization: float = field(default=0.7, metadata={
        "help": "vllm: fraction of each GPU's memory the engine may take (LlamaFactory's vLLM default, 0.7)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs to spread the model over."})

    def __post_init__(self):
        super().__post_init__()
        self.backend_reason = f"`backend: {self.backend}`"  # not a field: left out of manifests
        if self.backend == "auto":
            found = importlib.util.find_spec("vllm") is not None
            self.backend = "vllm" if found else "hf"
            self.backend_reason = ("`backend: auto` and vllm is importable" if found else
                                   "`backend: auto` and vllm is not installed here (pip install vllm, in its own "
                                   "environment: README, vLLM)")
        if self.backend not in BACKEND_ARGUMENTS:
            raise ValueError(f"`backend` must be one of {', '.join(BACKEND_ARGUMENTS)}, got {self.backend!r}")
        for key in ("batch_size", "max_new_tokens", "cutoff_len", "tensor_parallel_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"`{key}` must be >= 1, got {getattr(self, key)}")
        if self.max_model_len is not None and self.max_model_len <= self.max_new_tokens:
            raise ValueError(f"`max_model_len` ({self.max_model_len}) leaves no room for a prompt of "
                             f"`max_new_tokens` ({self.max_new_tokens}) generated tokens")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"`gpu_memory_utilization` must be in (0, 1], got {self.gpu_memory_utilization}")
        own = {f.name for f in fields(InferenceArguments)} - {"backend_args"}
        for key in self.backend_args:
            if key in own:
                raise ValueError(f"`backend_args.{key}`: `{key}` is a setting of its own; set `{key}=...`, "
                                 "not inside `backend_args`")
        self.backend_args = check_backend_args(self.backend, self.backend_args)

    def backend_kwargs(self) -> dict:
        """What `backends.load_backend` gets from the recipe (open_backend adds stop ids and the like)."""
        own = {}
        if self.backend in ("hf", "vllm"):
            own["dtype"] = self.dtype
        if self.backend == "vllm":
            own.update(max_model_len=self.max_model_len or self.cutoff_len + self.max_new_tokens,
                       gpu_memory_utilization=self.gpu_memory_utilization,
                       tensor_parallel_size=self.tensor_parallel_size)
        return {**own, **backend_kwargs(self.backend, self.backend_args)}

    @staticmethod
    def nested_help() -> list[tuple[str, type]]:
        return [(f"backend_args (backend={name})", cls) for name, cls in BACKEND_ARGUMENTS.items()]


@dataclass
class OutputArguments(Arguments):
    SECTION: ClassVar[str] = "output"

    output_dir: str = field(default="", metadata={"help": "Where the step writes its outputs."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over when output_dir holds results made from other inputs."})

    def __post_init__(self):
        super().__post_init__()
        if not self.output_dir:
            raise ValueError("`output_dir` is required")
