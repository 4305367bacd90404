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
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from . import evaluate as evaluate_step
from . import faults
from . import pseudolabel as pseudolabel_step
from .config import as_config, load_config
from .data_info import DATA_INFO, split_entries
from .errors import UserError, exit_on_user_error
from .hparams import RunArguments
from .inference import banner, model_identity
from .io_utils import atomic_write_json, atomic_write_text, file_digest, fingerprint, read_json
from .presets import get_preset
from .recipes import train_recipe


def _step_args(cfg: RunArguments) -> dict:
    """Pseudolabel settings after the ablation switches."""
    models, shots, n, justify = ["base", "warm"], [0, 1, 2, 3], cfg.n, cfg.justify
    if cfg.no_iwp:
        models = ["base"]
    if cfg.no_icp:
        shots = [0]
    if cfg.no_cl:
        models, n = ["warm"], 1
    n = min(n, len(models) * len(shots))
    return {"models": models, "shots": [s for s in shots if s <= cfg.k], "n": n, "justify": justify,
            "theta": cfg.theta, "k": cfg.k, "temperature": cfg.temperature}


class Runner:
    def __init__(self, cfg: RunArguments):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir).resolve()
        preset = get_preset(cfg.model)
        self.preset = preset
        self.model = cfg.model_name_or_path or preset.model_name_or_path
        self.template = cfg.template or preset.template

    # ------------------------------------------------------------------ steps
    def prepare(self) -> Path:
        from .demo_data import DemoSpec, write_demo_data
        from .prepare import prepare

        data = self.dir / "data"
        source = self.cfg.source
        if source == "generated":
            if self.cfg.task != "demo":
                raise UserError("`source: generated` makes demo data; set `task: demo` or point `source` at files")
            source_dir = self.dir / "source"
            spec = DemoSpec(seed=self.cfg.data_seed, **self.cfg.data_sizes)
            if not (source_dir / "test.csv").is_file():
                write_demo_data(source_dir, spec)
            source = str(source_dir)
        marker = data / "prepared.json"
        key = fingerprint({"task": self.cfg.task, "files": sorted(
            file_digest(p) for p in Path(source).iterdir() if p.is_file())})
        if not (marker.is_file() and read_json(marker).get("key") == key):
            banner("Prepare data")
            prepare(self.cfg.task, source, data)
            atomic_write_json(marker, {"key": key})
        return data

    def ensure_model(self) -> None:
        if self.cfg.model == "tiny" and not self.cfg.model_name_or_path and not Path(self.model).is_dir():
            from .demo_model import build_model

            banner(f"Build the tiny demo model ({self.model})")
            build_model(self.model, seed=0)
        if self.cfg.model == "tiny":
            self.model = str(Path(self.model).resolve())

    def train(self, name: str, stage: str, dataset_dir: Path, dataset: str, output_dir: Path) -> Path:
        """One LlamaFactory fine-tune in a subprocess, skipped when its marker matches its inputs."""
        recipe = train_recipe(self.cfg.task, self.preset, stage)
        recipe.update(model_name_or_path=self.model, template=self.template, dataset_dir=str(dataset_dir),
                      dataset=dataset, output_dir=str(output_dir), seed=self.cfg.seed)
        recipe.update(self.cfg.train_overrides)
        info = json.loads((dataset_dir / DATA_INFO).read_text())
        files = [dataset_dir / info[d.strip()]["file_name"] for d in dataset.split(",")]
        key = fingerprint({"recipe": recipe, "data": [file_digest(f) for f in files],
                           "model": model_identity(self.model)})
        marker = output_dir / "semievol_step.json"
        if marker.is_file() and read_json(marker).get("key") == key:
            print(f"{name}: finished before, skipped ({output_dir})")
            return output_dir
        banner(f"Train: {name}")
        recipe_path = self.dir / "recipes" / f"{name}.yaml"
        atomic_write_text(recipe_path, yaml.safe_dump(recipe, sort_keys=False))
        log = self.dir / "logs" / f"{name}.log"
        cmd = [_llamafactory_cli(), "train", str(recipe_path)]
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                proc = faults.run_training(name, output_dir, cmd, stdout=f, stderr=subprocess.STDOUT)
        except OSError as err:
            raise UserError(f"cannot write {log}: {err.strerror}") from None
        trained = any((output_dir / f).is_file() for f in ("adapter_config.json", "model.safetensors"))
        if proc.returncode != 0 or not trained:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-5:])
            raise UserError(f"step {name} failed (exit {proc.returncode}).\n  command: {' '.join(cmd)}\n"
                            f"  log: {log}\n  last lines:\n{tail}")
        atomic_write_json(marker, {"key": key})
        print(f"{name}: trained model in {output_dir}")
        return output_dir

    def _inference_args(self, data: Path, adapter: Path | None, out: Path) -> dict:
        """What the evaluate and pseudolabel steps share, in one place so a run setting reaches both."""
        cfg = self.cfg
        return {
            "model_name_or_path": self.model, "adapter_name_or_path": str(adapter) if adapter else None,
            "template": self.template, "task": cfg.task, "data_dir": str(data), "backend": cfg.backend,
            "backend_args": cfg.backend_args, "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens,
            "embedder": cfg.embedder, "output_dir": str(out), "overwrite_output_dir": True,
        }

    def evaluate(self, name: str, data: Path, adapter: Path | None, out: Path, rag_k: int = 0) -> dict:
        return evaluate_step.main({**self._inference_args(data, adapter, out), "seed": self.cfg.seed, "name": name,
                                   "rag_k": rag_k})

    # ------------------------------------------------------------------ the method
    def run(self) -> dict:
        cfg = self.cfg
        self.ensure_model()
        data = self.prepare()
        summary = {"task": cfg.task, "model": cfg.model, "run_dir": str(self.dir), "config": dataclasses.asdict(cfg),
                   "rounds": []}
        warm = self.train("round_1_warmup", "warmup", data, f"{cfg.task}_labeled", self.dir / "round_1" / "warmup")
        if cfg.stop_after == "warmup":
            return summary
        baselines = {
            "Vanilla": self.evaluate("Vanilla", data, None, self.dir / "eval" / "vanilla"),
            "SFT": self.evaluate("SFT", data, warm, self.dir / "eval" / "sft"),
        }
        if cfg.rag:
            baselines["RAG"] = self.evaluate("RAG", data, None, self.dir / "eval" / "rag", rag_k=cfg.k)
        selected_ids: list[str] = []
        labeled_dir = data
        for r in range(1, cfg.iterations + 1):
            rd = self.dir / f"round_{r}"
            if r > 1:
                labeled_dir = self._merge_labeled(data, rd / "data", selected_ids)
            exclude = rd / "exclude_ids.json"
            atomic_write_json(exclude, selected_ids)
            stats = pseudolabel_step.main({
                **self._inference_args(labeled_dir, warm, rd / "pseudolabel"), "seed": cfg.seed + r - 1,
                "exclude_ids_file": str(exclude), **_step_args(cfg),
            })
            if cfg.stop_after == "pseudolabel":
                return summary
            if stats["kept"] == 0:
                raise UserError(
                    f"round {r}: pseudolabel kept no samples ({stats['dropped_no_answer']} of {stats['unlabeled']} had "
                    f"no extractable answer); see {rd / 'pseudolabel' / 'candidates.jsonl'}. A model that cannot "
                    "follow the self-justify prompt needs `justify: vote` or `justify: disagreements`.")
            evolved = self.train(f"round_{r}_evolve", "evolve", rd / "pseudolabel",
                                 f"{cfg.task}_labeled,{cfg.task}_selected", rd / "evolve")
            if cfg.stop_after == "evolve":
                return summary
            semievol = self.evaluate("SemiEvol", data, evolved, rd / "eval" / "semievol")
            summary["rounds"].append({
                "round": r,
                "results": {**baselines, "SemiEvol": semievol},
                "predictions": {name: os.path.relpath(p / "predictions.jsonl", self.dir) for name, p in [
                    ("Vanilla", self.dir / "eval" / "vanilla"), ("SFT", self.dir / "eval" / "sft"),
                    ("SemiEvol", rd / "eval" / "semievol")] + ([("RAG", self.dir / "eval" / "rag")] if cfg.rag else [])},
                "pseudolabel": stats,
                "candidates": os.path.relpath(rd / "pseudolabel" / "candidates.jsonl", self.dir),
            })
            selected_ids += read_json(rd / "pseudolabel" / "selected_ids.json")
            warm = evolved  # trained on labeled ∪ selected: the next round's labeled set
        atomic_write_json(self.dir / "summary.json", summary)
        return summary

    def _merge_labeled(self, data: Path, out: Path, selected_ids: list[str]) -> Path:
        """Round r's data folder: labeled ∪ all selected so far, the original unlabeled and test."""
        rows = json.loads((data / "labeled.json").read_text())
        wanted = set(selected_ids)
        for selected in sorted(self.dir.glob("round_*/pseudolabel/selected.json")):
            rows += [row for row in json.loads(selected.read_text()) if row["id"] in wanted]
        atomic_write_json(out / "labeled.json", rows)
        for split in ("unlabeled", "test"):
            atomic_write_text(out / f"{split}.json", (data / f"{split}.json").read_text())
        atomic_write_json(out / DATA_INFO, split_entries(self.cfg.task, out, out, splits=("labeled", "test")))
        return out


def _llamafactory_cli() -> str:
    exe = Path(sys.executable).with_name("llamafactory-cli")
    return str(exe) if exe.is_file() else "llamafactory-cli"


def main(cfg: RunArguments | dict | None = None, argv: list[str] | None = None) -> dict:
    cfg = load_config(RunArguments, argv) if argv is not None else as_config(RunArguments, cfg)
    summary = Runner(cfg).run()
    if summary["rounds"]:
        from .report import format_table, write_report

        report = write_report(Path(cfg.run_dir), summary)
        print(format_table(summary))
        print(f"report: {report}")
    return summary


if __name__ == "__main__":
    with exit_on_user_error():
        main()
