"""How a step runs its requests (backend, dtype, batching, lengths, GPU memory, seed) and where it writes.

`backend: auto` picks the fastest backend this environment has: vllm when it is importable; else hf
on a machine without a CUDA device; with a CUDA device and no vLLM it stops (`choose_backend`): hf
there would be a Python decode loop, hours instead of minutes. The GPU settings
(`gpu_memory_utilization`, `tensor_parallel_size`, `max_model_len`) are the vllm engine's; the hf
backend uses one device and the openai backend the server's own settings.
"""

import importlib.util
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from ..errors import UserError
from .backend_args import BACKEND_ARGUMENTS, backend_kwargs, check_backend_args
from .base import Arguments

# The LoRA rank of the adapters `semievol-lf run` trains, unless `train_overrides` or the preset set one
# (llamafactory/recipes.py, the train recipe's `lora_rank`); a served model needs `--max-lora-rank` >= it.
RUN_LORA_RANK = 16


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_device() -> bool:
    """Whether torch sees a CUDA device (imports torch: asked only for `backend: auto` without vLLM)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_backend(requested: str, *, vllm_found: bool, cuda: bool, serve_hint: str = "") -> tuple[str, str]:
    """(backend, why) for `backend: requested`; raises ValueError where `auto` has no good choice.

    ("auto", vllm_found=True, cuda=...) -> ("vllm", ...);  ("auto", False, cuda=False) -> ("hf", ...);
    ("auto", False, cuda=True) -> ValueError with the two ways out;  ("hf", ...) -> ("hf", "`backend: hf`")
    """
    if requested != "auto":
        return requested, f"`backend: {requested}`"
    if vllm_found:
        return "vllm", "`backend: auto` and vllm is importable"
    if not cuda:
        return "hf", ("`backend: auto` and vllm is not installed here (pip install vllm, in its own environment: "
                      "README, vLLM)")
    raise ValueError(
        "`backend: auto` found a CUDA device but no vLLM in this environment, and will not fall back to hf on a "
        "GPU (a Python decode loop: hours where vLLM takes minutes). Either run in an environment with vLLM "
        "(docs/gpu.md, vLLM (GPU), ways 1 and 2), or serve the model with vLLM elsewhere and use the openai "
        f"backend:{serve_hint or ' vllm serve MODEL --generation-config vllm, then backend=openai'}. "
        "Or set `backend: hf` to run on hf anyway.")


@dataclass
class InferenceArguments(Arguments):
    SECTION: ClassVar[str] = "inference"

    backend: Literal["auto", "hf", "vllm", "openai"] = field(default="hf", metadata={
        "help": "Inference backend; auto: vllm when it is importable here (the fastest on a GPU), else hf on a "
                "machine without CUDA; with CUDA and no vLLM it stops with the two ways out (a vLLM environment, "
                "or `vllm serve` and backend=openai). Set hf to use hf on a GPU."})
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
        if self.backend == "auto":
            found = vllm_importable()
            self.backend, self.backend_reason = choose_backend(
                "auto", vllm_found=found, cuda=not found and cuda_device(), serve_hint=self.serve_hint())
        else:
            self.backend_reason = f"`backend: {self.backend}`"  # not a field: left out of manifests
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

    def serve_hint(self) -> str:
        """The `vllm serve` command for this recipe's model and LoRA settings, and the run with `backend=openai`.

        A step with an adapter folder serves it as `warm` (`--max-lora-rank` from its adapter_config.json);
        `semievol-lf run` (which has `train_overrides`) trains its adapters later, so the server loads each
        at run time (VLLM_ALLOW_RUNTIME_LORA_UPDATING) and `--max-lora-rank` is the recipes' LoRA rank.
        """
        from ..backends.vllm import adapter_rank, max_lora_rank_for, read_adapter_config

        model = _model_of(self)
        adapter = getattr(self, "adapter_name_or_path", None)
        serve = ["vllm", "serve", model]
        is_run = hasattr(self, "train_overrides")
        if is_run:
            try:
                preset_rank = self.preset.train.get("lora_rank")
            except (AttributeError, KeyError):  # an unknown preset: refused by the run's own check right after
                preset_rank = None
            rank = self.train_overrides.get("lora_rank") or preset_rank or RUN_LORA_RANK
            serve += ["--enable-lora", "--max-lora-rank", str(max_lora_rank_for(int(rank)))]
        elif adapter:
            try:
                rank = adapter_rank(read_adapter_config(adapter))
            except (UserError, OSError, ValueError, KeyError):  # not trained yet, or unreadable: the recipes' rank
                rank = RUN_LORA_RANK
            serve += ["--enable-lora", "--lora-modules", f"warm={adapter}", "--max-lora-rank",
                      str(max_lora_rank_for(rank))]
        serve += ["--max-model-len", str(self.max_model_len or self.cutoff_len + self.max_new_tokens),
                  "--generation-config", "vllm", "--port", "8000"]
        env = "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True " if is_run else ""
        return (f" `{env}{' '.join(serve)}` (in the vLLM environment), then this command with "
                "`backend=openai 'backend_args={base_url: \"http://127.0.0.1:8000/v1\"}'`")


def _model_of(cfg) -> str:
    """The base model of a step (`model_name_or_path`) or of a run (its preset's, unless overridden)."""
    try:
        return getattr(cfg, "base_model", None) or getattr(cfg, "model_name_or_path", None) or "MODEL"
    except KeyError:  # a run with an unknown preset: refused by its own check right after
        return "MODEL"


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
