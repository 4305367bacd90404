"""Model presets: the Hugging Face model, its LlamaFactory template and hardware settings.

The recipes generator and `semievol-lf run` read these; a user's own model needs no preset
(set `model_name_or_path` and `template` in the recipe or with key=value).
"""

from dataclasses import dataclass, field

from .errors import UserError


@dataclass(frozen=True)
class ModelPreset:
    name: str
    model_name_or_path: str
    template: str
    train: dict = field(default_factory=dict)  # per-model overrides of the train recipe
    gpu: bool = True  # its generated recipes infer with the fastest GPU backend (vllm when importable, bf16)


TINY_TRAIN = {
    # A random-init 2-layer model learns nothing at the paper's lr 1e-4 in 2 epochs; these
    # settings make the CPU demo learn its task in seconds.
    "lora_rank": 16, "lora_alpha": 32, "learning_rate": 5.0e-3, "num_train_epochs": 10.0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "cutoff_len": 256,
    "bf16": False, "logging_steps": 5, "save_steps": 100000, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
}

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ModelPreset("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "qwen"),
        ModelPreset("gemma2-9b", "google/gemma-2-9b-it", "gemma2"),
        ModelPreset("tiny", ".cache/tiny-llama", "default", train=TINY_TRAIN, gpu=False),
    ]
}
DEFAULT_PRESET = "llama3.1-8b"


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise UserError(f"Unknown model preset {name!r}. Available: {', '.join(PRESETS)}")
    return PRESETS[name]
