"""The model a step runs: base model, warm adapter, and how prompts are rendered for it."""

from dataclasses import dataclass, field
from typing import ClassVar

from .base import Arguments


@dataclass
class ModelArguments(Arguments):
    SECTION: ClassVar[str] = "model"

    model_name_or_path: str = field(default="", metadata={"help": "Base model M_base: hub name or local path."})
    adapter_name_or_path: str | None = field(
        default=None, metadata={"help": "Warm LoRA adapter (the warm-up's output_dir); None for the base model only."})
    template: str = field(default="default", metadata={"help": "LlamaFactory template, the one the fine-tunes use."})
    chat_format: str | None = field(default=None, metadata={
        "help": "Folder from `semievol-lf export-chat-format`: renders prompts without LlamaFactory (vLLM-only env)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("`model_name_or_path` is required")
