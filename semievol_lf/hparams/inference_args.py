"""How a step runs its requests (backend, batching, length, seed) and where it writes."""

from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from .backend_args import BACKEND_ARGUMENTS, backend_kwargs, check_backend_args
from .base import Arguments


@dataclass
class InferenceArguments(Arguments):
    SECTION: ClassVar[str] = "inference"

    backend: Literal["hf", "vllm", "openai"] = field(default="hf", metadata={"help": "Inference backend."})
    backend_args: dict = field(default_factory=dict, metadata={
        "help": "Keyword arguments of the backend, checked per backend (listed at the end of --help), "
                "e.g. {base_url: ...} for openai, {tensor_parallel_size: 4} for vllm."})
    batch_size: int = field(default=16, metadata={"help": "Requests per backend call (hf); vllm takes all."})
    max_new_tokens: int = field(default=256, metadata={"help": "Generation length limit."})
    seed: int = field(default=42, metadata={"help": "Seed of every random choice of the step."})

    def __post_init__(self):
        super().__post_init__()
        if self.backend not in BACKEND_ARGUMENTS:
            raise ValueError(f"`backend` must be one of {', '.join(BACKEND_ARGUMENTS)}, got {self.backend!r}")
        for key in ("batch_size", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"`{key}` must be >= 1, got {getattr(self, key)}")
        own = {f.name for f in fields(InferenceArguments)} - {"backend_args"}
        for key in self.backend_args:
            if key in own:
                raise ValueError(f"`backend_args.{key}`: `{key}` is a setting of its own; set `{key}=...`, "
                                 "not inside `backend_args`")
        self.backend_args = check_backend_args(self.backend, self.backend_args)

    def backend_kwargs(self) -> dict:
        """What `backends.load_backend` gets from the recipe (open_backend adds stop ids and the like)."""
        return backend_kwargs(self.backend, self.backend_args)

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
