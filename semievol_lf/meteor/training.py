"""METEOR's fine-tunes as generated LlamaFactory recipes, run by `launcher.train` (marker, resume, log).

    sft_recipe(cfg, "distill", dataset_dir, "meteor_distilled", out)                  # stage 1: from the base model
    sft_recipe(cfg, "refine", dataset_dir, "meteor_refine_2", out, previous=adapter)  # stage 2: continues the student
    preference_recipe(cfg, dataset_dir, "meteor_preferences", out, previous=adapter)  # stage 3

Each stage has METEOR's own training settings (`meteor_train`), merged over the preset's hardware settings
and under the recipe's `train_overrides` (stages 1, 2) or `dpo_overrides` (stage 3). The authors fully
fine-tune (`AUTHORS_FULL`); a full fine-tune here gets their learning rates, a LoRA one ten times them (the
ratio of LlamaFactory's own examples: llama3_full_sft 1e-5, llama3_lora_sft 1e-4).

Stage 3 trains with LlamaFactory's `pref_loss: simpo` (reference-free, on the mean per-token
log-probability of each answer) with `simpo_gamma: 0` and `pref_beta: 1`: softplus(-(mean logp(chosen) -
mean logp(rejected))), the smooth form of the authors' relu(NLL(chosen) - NLL(rejected)), margin 0.
`dpo_overrides: {pref_loss: sigmoid}` trains DPO instead, against the stage-2 student as reference
(`ref_model` + `ref_model_adapters` for LoRA; the model itself for a full fine-tune).

Every fine-tune after the first continues the current student: a LoRA student resumes its adapter
(`adapter_name_or_path`), a fully fine-tuned one starts from its last weights (`model_name_or_path`).
The preference recipe is checked by LlamaFactory's own parser (`recipes.validate_recipe`) before it trains.
"""

from pathlib import Path

from ..llamafactory import launcher
from ..llamafactory.recipes import BASE_TRAIN, validate_recipe

# The authors' full fine-tunes (code/finetune.py for stages 1 and 2, code/self_training.py for stage 3):
# batch 1 x gradient accumulation 8, max_seq_length 512. Stage 2's rounds run finetune.py with its defaults
# (3 epochs); here a round is one epoch (issue 22), since it continues a student already trained on the domain.
AUTHORS_FULL = {
    "distill": {"learning_rate": 3.0e-5, "num_train_epochs": 3.0},
    "refine": {"learning_rate": 3.0e-5, "num_train_epochs": 1.0},
    "self_evolve": {"learning_rate": 1.0e-5, "num_train_epochs": 1.0},
}
LORA_LR_SCALE = 10  # LlamaFactory's examples: full SFT 1e-5, LoRA SFT 1e-4
BATCH = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "cutoff_len": 512}
# reference-free and length-normalised (LlamaFactory divides SimPO's log-probabilities by the answer's length)
PREFERENCE_LOSS = {"stage": "dpo", "pref_loss": "simpo", "pref_beta": 1.0, "simpo_gamma": 0.0, "pref_ftx": 0.0}
REFERENCE_FREE = ("simpo", "orpo")  # LlamaFactory's losses without a reference model


def meteor_train(stage: str, finetuning_type: str) -> dict:
    """METEOR's settings of a stage ("distill", "refine", "self_evolve") for a LoRA or full fine-tune.

    ("distill", "lora") -> {"learning_rate": 3e-4, "num_train_epochs": 3.0, "per_device_train_batch_size": 1, ...}
    """
    values = {**BATCH, **AUTHORS_FULL[stage]}
    if finetuning_type != "full":
        values["learning_rate"] = round(values["learning_rate"] * LORA_LR_SCALE, 10)
    return values


def _base(cfg, stage: str, dataset_dir: Path, dataset: str, output_dir: Path) -> dict:
    recipe = dict(BASE_TRAIN, model_name_or_path=cfg.student_model, template=cfg.template,
                  dataset_dir=str(dataset_dir), dataset=dataset, output_dir=str(output_dir), seed=cfg.seed)
    recipe.update(cfg.preset.train)  # hardware settings (precision, workers), LoRA rank
    recipe.update(meteor_train(stage, recipe.get("finetuning_type", "lora")))
    return recipe


def _continue_from(recipe: dict, previous: Path | None) -> dict:
    if previous is None:
        return recipe
    if recipe.get("finetuning_type") == "full":
        recipe["model_name_or_path"] = str(previous)
    else:
        recipe["adapter_name_or_path"] = str(previous)
    return recipe


def sft_recipe(cfg, stage: str, dataset_dir: Path, dataset: str, output_dir: Path,
               previous: Path | None = None) -> dict:
    """Stage 1 (`stage` "distill") or a stage-2 round ("refine")."""
    recipe = _base(cfg, stage, dataset_dir, dataset, output_dir)
    recipe.update(cfg.train_overrides)
    return _continue_from(recipe, previous)


def preference_recipe(cfg, dataset_dir: Path, dataset: str, output_dir: Path, previous: Path) -> dict:
    recipe = _base(cfg, "self_evolve", dataset_dir, dataset, output_dir)
    recipe.update(PREFERENCE_LOSS)
    recipe.update(cfg.dpo_overrides)
    recipe = _continue_from(recipe, previous)
    if recipe["pref_loss"] != "simpo":
        recipe.pop("simpo_gamma", None)  # SimPO's margin only
    if recipe["pref_loss"] not in REFERENCE_FREE and recipe.get("finetuning_type", "lora") == "lora":
        recipe.update(ref_model=cfg.student_model, ref_model_adapters=str(previous))  # DPO: the stage-2 student
    return recipe


def train(name: str, recipe: dict, layout, validate: bool = False) -> Path:
    """Write the recipe, optionally validate it with LlamaFactory's parser, train (skipped when finished)."""
    if validate:
        import yaml

        from ..io_utils import atomic_write_text

        path = layout.recipe(name)
        atomic_write_text(path, yaml.safe_dump(recipe, sort_keys=False))
        print(validate_recipe(path))
        import transformers

        transformers.logging.set_verbosity_warning()  # LlamaFactory's parser turned it up to info
    return launcher.train(name, recipe, layout.recipe(name), layout.log(name))
