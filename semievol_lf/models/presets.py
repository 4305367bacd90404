"""Model presets: the Hugging Face model, its LlamaFactory template and hardware settings.

The recipes generator and `semievol-lf run` read these; a user's own model needs no preset
(set `model_name_or_path` and `template` in the recipe or with key=value).
"""

from dataclasses import dataclass, field

from ..errors import UserError


@dataclass(frozen=True)
class ModelPreset:
    name: str
    model_name_or_path: str
    template: str
    train: dict = field(default_factory=dict)  # per-model overrides of the train recipe
    gpu: bool = True  # its generated recipes infer with the fastest GPU backend (vllm when importable, bf16)
    # A local model that `model_build.BUILDERS[build](path, **build_args)` makes under .cache/ on first
    # use (`semievol-lf model build NAME`); "" for a hub model.
    build: str = ""
    build_args: dict = field(default_factory=dict)


TINY_TRAIN = {
    # A random-init 2-layer model learns nothing at the paper's lr 1e-4 in 2 epochs; these
    # settings make the CPU demo learn its task in seconds.
    "lora_rank": 16, "lora_alpha": 32, "learning_rate": 5.0e-3, "num_train_epochs": 10.0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "cutoff_len": 256,
    "bf16": False, "logging_steps": 5, "save_steps": 100000, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
}

# `make demo` (recipes/run_demo.yaml): the setting bench/quality.py found where SemiEvol's gain is
# real. LoRA on a random-init model does not learn the label; a FULL fine-tune of a word-level model
# (every invented word one token, embeddings of std 0.02) does, in seconds. The step recipes
# (warmup_demo.yaml, ...) and the tests keep `tiny`.
TINY_WORD_BUILD = {"tokenizer": "word", "hidden_size": 128, "intermediate_size": 512, "embed_std": 0.02}
TINY_WORD_TRAIN = {
    "finetuning_type": "full", "learning_rate": 2.0e-3, "num_train_epochs": 20.0,
    "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "adam_beta2": 0.98,
    "weight_decay": 0.01, "max_grad_norm": 1.0, "warmup_ratio": 0.1, "lr_scheduler_type": "cosine",
    "cutoff_len": 256, "bf16": False, "logging_steps": 10, "save_steps": 100000, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
}

# SmolLM2-135M-Instruct on the CPU: LoRA r16 on all linear layers as in the paper, float32
# (no bf16 on most CPUs), small batches; cutoff 1024 holds a 3-shot ICP or self-justify prompt.
# A checkpoint every 20 optimizer steps (5-7 min of a one-thread fine-tune here), only the last one
# kept: a fine-tune killed mid-way (bench-real's hour-long ones) resumes instead of starting over.
SMOLLM2_CPU_TRAIN = {
    "lora_rank": 16, "lora_alpha": 32, "learning_rate": 2.0e-4, "num_train_epochs": 2.0,
    "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "cutoff_len": 1024,
    "bf16": False, "logging_steps": 5, "save_steps": 20, "save_total_limit": 1, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
}

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ModelPreset("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "qwen"),
        ModelPreset("gemma2-9b", "google/gemma-2-9b-it", "gemma2"),
        ModelPreset("tiny", ".cache/tiny-llama", "default", train=TINY_TRAIN, build="demo", gpu=False),
        ModelPreset("tiny-word", ".cache/tiny-word", "default", train=TINY_WORD_TRAIN, build="demo",
                    build_args=TINY_WORD_BUILD, gpu=False),
        ModelPreset("smollm2-135m", ".cache/smollm2-135m", "smollm2", train=SMOLLM2_CPU_TRAIN, build="smollm2-gguf",
                    gpu=False),
    ]
}
DEFAULT_PRESET = "llama3.1-8b"


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise UserError(f"Unknown model preset {name!r}. Available: {', '.join(PRESETS)}")
    return PRESETS[name]
