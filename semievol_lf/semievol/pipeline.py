"""`semievol-lf run RECIPE`: the whole method, resumable, with baselines and a report.

    prepare -> warm-up (llamafactory-cli train) -> pseudolabel -> evolve (llamafactory-cli train)
            -> evaluate Vanilla, SFT, SemiEvol [, RAG] -> next round ... -> report

Round r > 1 (paper 4.3.7): labeled ∪ everything selected so far is the labeled set, and only
unlabeled questions not yet selected are pseudo-labeled. The warm model of round r is the
evolved model of round r-1, which was trained on exactly that labeled set.
Every step is skipped when its finished outputs match its inputs; a failed training stops
the run and names the step, the command and its log.
"""

import dataclasses
import os
from pathlib import Path

from ..backends import while_training
from ..config import RunArguments, as_config, load_config
from ..data.tasks import get_task
from ..errors import UserError, exit_on_user_error
from ..io_utils import atomic_write_json, atomic_write_text, read_json
from ..llamafactory import launcher
from ..llamafactory.dataset_info import DATA_INFO, split_entries
from ..llamafactory.recipes import train_recipe
from ..models.presets import get_preset
from ..progress import setup_logging
from . import evaluate as evaluate_step
from .layout import RunLayout
from .preflight import preflight
from .pseudolabel import run as pseudolabel_step
from .run_setup import ensure_model, prepare_data


class Runner:
    def __init__(self, cfg: RunArguments):
        self.cfg = cfg
        self.layout = RunLayout(Path(cfg.output_dir).resolve())
        self.preset = get_preset(cfg.model)
        self.model = cfg.model_name_or_path or self.preset.model_name_or_path
        self.template = cfg.template or self.preset.template
        self.task = get_task(cfg.task).name  # names the datasets; `cfg.task` may be a task file's path

    # ------------------------------------------------------------------ steps
    def train_recipe(self, stage: str, dataset_dir: Path, dataset: str, output_dir: Path) -> dict:
        """The LlamaFactory recipe of one fine-tune (`stage` warmup or evolve) of the base model."""
        recipe = train_recipe(self.task, self.preset, stage)
        recipe.update(model_name_or_path=self.model, template=self.template, dataset_dir=str(dataset_dir),
                      dataset=dataset, output_dir=str(output_dir), seed=self.cfg.seed)
        recipe.update(self.cfg.train_overrides)
        return recipe

    def train(self, name: str, stage: str, dataset_dir: Path, dataset: str, output_dir: Path) -> Path:
        """One LlamaFactory fine-tune (`stage` warmup or evolve) of the base model."""
        recipe = self.train_recipe(stage, dataset_dir, dataset, output_dir)
        # the run's inference must not hold the GPU the fine-tune needs (a vLLM server sleeps meanwhile)
        gpu = while_training(self.cfg.backend, self.cfg.backend_kwargs(), f"{name} trains")
        return launcher.train(name, recipe, self.layout.recipe(name), self.layout.log(name), while_training=gpu)

    def evaluate(self, name: str, data: Path, adapter: Path | None, out: Path, rag_k: int = 0) -> dict:
        return evaluate_step.main(self.cfg.evaluate_args(name, data, adapter, out, rag_k=rag_k, model=self.model))

    def pseudolabel(self, r: int, data: Path, warm: Path, exclude_ids: Path) -> dict:
        return pseudolabel_step.main(self.cfg.pseudolabel_args(data, warm, self.layout.pseudolabel(r),
                                                               self.cfg.seed + r - 1, exclude_ids, model=self.model))

    # ------------------------------------------------------------------ the method
    def run(self) -> dict:
        cfg, layout = self.cfg, self.layout
        preflight(cfg)  # model, embedder, data, server: every problem now, not after the warm-up
        data = prepare_data(cfg.task, cfg.source, layout, cfg.data_seed, cfg.data_sizes)  # every row checked first
        self.model = ensure_model(self.preset, self.model, explicit=bool(cfg.model_name_or_path))
        summary = {"task": cfg.task, "model": cfg.model, "output_dir": str(layout.root),
                   "config": dataclasses.asdict(cfg), "rounds": []}
        # IWP: M_warm = LoRA SFT of M_base on the labeled set
        warm = self.train("round_1_warmup", "warmup", data, f"{self.task}_labeled", layout.warmup)
        if cfg.stop_after == "warmup":
            return summary
        baselines = {"Vanilla": self.evaluate("Vanilla", data, None, layout.baseline("Vanilla")),
                     "SFT": self.evaluate("SFT", data, warm, layout.baseline("SFT"))}
        if cfg.rag:
            baselines["RAG"] = self.evaluate("RAG", data, None, layout.baseline("RAG"), rag_k=cfg.k)
        selected_ids: list[str] = []
        labeled_dir = data
        for r in range(1, cfg.iterations + 1):
            if r > 1:  # paper 4.3.7: labeled ∪ everything selected so far is the labeled set
                labeled_dir = self._merge_labeled(data, layout.round_data(r), selected_ids)
            atomic_write_json(layout.exclude_ids(r), selected_ids)
            # ICP + CL + self-justify + adaptive selection on the unlabeled questions not yet selected
            stats = self.pseudolabel(r, labeled_dir, warm, layout.exclude_ids(r))
            if cfg.stop_after == "pseudolabel":
                return summary
            if stats["kept"] == 0:
                raise UserError(
                    f"round {r}: pseudolabel kept no samples ({stats['dropped_no_answer']} of {stats['unlabeled']} had "
                    f"no extractable answer); see {layout.pseudolabel(r) / 'candidates.jsonl'}. A model that cannot "
                    "follow the self-justify prompt needs `justify: vote` or `justify: disagreements`.")
            # Evolve: M_evol = LoRA SFT of M_base (not of M_warm) on labeled ∪ selected
            evolved = self.train(f"round_{r}_evolve", "evolve", layout.pseudolabel(r),
                                 f"{self.task}_labeled,{self.task}_selected", layout.evolve(r))
            if cfg.stop_after == "evolve":
                return summary
            semievol = self.evaluate("SemiEvol", data, evolved, layout.semievol(r))
            evals = {"Vanilla": layout.baseline("Vanilla"), "SFT": layout.baseline("SFT"),
                     "SemiEvol": layout.semievol(r), **({"RAG": layout.baseline("RAG")} if cfg.rag else {})}
            summary["rounds"].append({
                "round": r,
                "results": {**baselines, "SemiEvol": semievol},
                "predictions": {name: os.path.relpath(p / "predictions.jsonl", layout.root)
                                for name, p in evals.items()},
                "pseudolabel": stats,
                "candidates": os.path.relpath(layout.pseudolabel(r) / "candidates.jsonl", layout.root),
            })
            selected_ids += read_json(layout.pseudolabel(r) / "selected_ids.json")
            warm = evolved  # trained on labeled ∪ selected: the next round's labeled set
        atomic_write_json(layout.summary, summary)
        return summary

    def _merge_labeled(self, data: Path, out: Path, selected_ids: list[str]) -> Path:
        """Round r's data folder: labeled ∪ all selected so far, the original unlabeled and test."""
        rows = read_json(data / "labeled.json")
        wanted = set(selected_ids)
        for selected in sorted(self.layout.root.glob("round_*/pseudolabel/selected.json")):
            rows += [row for row in read_json(selected) if row["id"] in wanted]
        atomic_write_json(out / "labeled.json", rows)
        for split in ("unlabeled", "test"):
            atomic_write_text(out / f"{split}.json", (data / f"{split}.json").read_text())
        atomic_write_json(out / DATA_INFO, split_entries(self.task, out, out, splits=("labeled", "test")))
        return out


def main(cfg: RunArguments | dict | None = None, argv: list[str] | None = None) -> dict:
    cfg = load_config(RunArguments, argv) if argv is not None else as_config(RunArguments, cfg)
    summary = Runner(cfg).run()
    if summary["rounds"]:
        from .report import format_table, write_report

        report = write_report(Path(cfg.output_dir), summary)
        print(format_table(summary))
        print(f"report: {report}")
    return summary


if __name__ == "__main__":
    setup_logging()
    with exit_on_user_error():
        main()
