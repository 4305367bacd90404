"""Every path in a `semievol-lf meteor run` folder, in one place (the pipeline, the report and the tests).

    runs/meteor_demo/
      questions.json              the domain questions and the held-out test questions
      guidelines/                 stage 1: the student's guideline per question (guidelines.jsonl last)
      distill/                    stage 1: the teacher's answers; sft.json + dataset_info.json (alpaca)
      quality/                    stage 1: teacher answers with vs without guidelines, judged (results.json)
      sft/                        stage 1: the student fine-tuned on them (LlamaFactory output_dir)
      refine/                     stage 2: trace.jsonl (every attempt and verdict), round_K.json data,
                                  dataset_info.json, round_K/ (the SFT round's adapter), stats.json last
      preferences/                stage 3: candidates.jsonl, pairs.json + dataset_info.json (pairwise)
      dpo/                        stage 3: the DPO fine-tune
      judge/                      stage 4: scores.jsonl, results.json
      recipes/NAME.yaml, logs/NAME.log    each fine-tune's LlamaFactory recipe and output
      summary.json                written last; report.md, plots/
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MeteorLayout:
    root: Path

    def __getattr__(self, name: str) -> Path:  # guidelines, distill, quality, sft, refine, preferences, dpo, judge
        if name in STEPS:
            return self.root / name
        raise AttributeError(name)

    @property
    def questions(self) -> Path:
        return self.root / "questions.json"

    def refine_round(self, k: int) -> Path:
        return self.root / "refine" / f"round_{k}"

    def recipe(self, name: str) -> Path:
        return self.root / "recipes" / f"{name}.yaml"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


STEPS = ("guidelines", "distill", "quality", "sft", "refine", "preferences", "dpo", "judge")
