"""Every path in a `semievol-lf run` folder, in one place (the run, bench/ and the tests read it).

    runs/demo/
      source/                     generated demo task (`source: generated` only)
      data/                       prepared labeled/unlabeled/test + dataset_info.json; prepared.json last
      recipes/NAME.yaml           each fine-tune's LlamaFactory recipe, as trained
      logs/NAME.log               each fine-tune's output
      eval/{vanilla,sft,rag}/     baselines (evaluate step folders)
      round_R/
        warmup/                   round 1 only: M_warm (LlamaFactory output_dir + semievol_step.json)
        data/                     round R > 1: labeled ∪ selected so far
        exclude_ids.json          unlabeled ids selected in earlier rounds
        pseudolabel/              the pseudolabel step folder
        evolve/                   M_evol (LlamaFactory output_dir + semievol_step.json)
        eval/semievol/            SemiEvol's evaluation
      summary.json                written last
      report.md, report.html, figures/
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def recipe(self, name: str) -> Path:
        return self.root / "recipes" / f"{name}.yaml"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def baseline(self, name: str) -> Path:
        """Evaluation folder of a baseline: Vanilla, SFT or RAG."""
        return self.root / "eval" / name.lower()

    def round(self, r: int) -> Path:
        return self.root / f"round_{r}"

    @property
    def warmup(self) -> Path:
        return self.round(1) / "warmup"

    def round_data(self, r: int) -> Path:
        return self.round(r) / "data"

    def exclude_ids(self, r: int) -> Path:
        return self.round(r) / "exclude_ids.json"

    def pseudolabel(self, r: int) -> Path:
        return self.round(r) / "pseudolabel"

    def evolve(self, r: int) -> Path:
        return self.round(r) / "evolve"

    def semievol(self, r: int) -> Path:
        return self.round(r) / "eval" / "semievol"
