"""METEOR's fine-tunes as generated LlamaFactory recipes, run by `launcher.train` (marker, resume, log).

    sft_recipe(cfg, dataset_dir, "meteor_distilled", out)                 # stage 1: from the base model
    sft_recipe(cfg, dataset_dir, "meteor_refine_2", out, previous=adapter) # stage 2: continues the student
    dpo_recipe(cfg, dataset_dir, "meteor_preferences", out, previous=adapter)

Every fine-tune after the first continues the current student: a LoRA student resumes its adapter
(`adapter_name_or_path`), a fully fine-tuned one starts from its last weights (`model_name_or_path`).
The DPO reference is the student before DPO (`ref_model` + `ref_model_adapters` for LoRA; the model
itself for a full fine-tune), so DPO moves away from the stage-2 student, not from the base model.
The DPO recipe is checked by LlamaFactory's own parser (`recipes.validate_recipe`) before it trains.
"""

from pathlib import Path

from ..llamafactory import launcher
from ..llamafactory.recipes import BASE_TRAIN, validate_recipe

# LlamaFactory's DPO defaults (examples/train_lora/llama3_lora_dpo.yaml): beta 0.1, sigmoid loss, lr 5e-6.
DPO_TRAIN = {"stage": "dpo", "pref_beta": 0.1, "pref_loss": "sigmoid", "learning_rate": 5.0e-6,
             "num_train_epochs": 1.0}


def _base(cfg, dataset_dir: Path, dataset: str, output_dir: Path, previous: Path | None) -> dict:
    recipe = dict(BASE_TRAIN, model_name_or_path=cfg.student_model, template=cfg.template,
                  dataset_dir=str(dataset_dir), dataset=dataset, output_dir=str(output_dir), seed=cfg.seed)
    recipe.update(cfg.preset.train)
    return recipe


def _continue_from(recipe: dict, previous: Path | None) -> dict:
    if previous is None:
        return recipe
    if recipe.get("finetuning_type") == "full":
        recipe["model_name_or_path"] = str(previous)
    else:
        recipe["adapter_name_or_path"] = str(previous)
    return recipe


def sft_recipe(cfg, dataset_dir: Path, dataset: str, output_dir: Path, previous: Path | None = None) -> dict:
    recipe = _base(cfg, dataset_dir, dataset, output_dir, previous)
    recipe.update(cfg.train_overrides)
    return _continue_from(recipe, previous)


def dpo_recipe(cfg, dataset_dir: Path, dataset: str, output_dir: Path, previous: Path) -> dict:
    recipe = _base(cfg, dataset_dir, dataset, output_dir, previous)
    recipe.update(DPO_TRAIN)
    recipe.update(cfg.dpo_overrides)
    recipe = _continue_from(recipe, previous)
    if recipe.get("finetuning_type", "lora") == "lora":
        recipe.update(ref_model=cfg.student_model, ref_model_adapters=str(previous))
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
