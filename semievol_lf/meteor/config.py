"""`semievol-lf meteor run RECIPE`: the settings of the whole METEOR pipeline, checked once.

The student runs on this package's backends (its `backend`, `backend_args`, `dtype`, `batch_size` are
InferenceArguments'); the teacher and the judge are `ChatModelArguments`: an OpenAI-compatible chat
endpoint (`kind: openai`, a hosted API or `vllm serve`), or a local model over the hf or vllm backend.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from ..config.inference_args import InferenceArguments
from ..config.parser import build_nested, did_you_mean
from ..models.presets import PRESETS


def _section(name: str, help: str) -> dict:
    return {"help": help, "section": name}


@dataclass
class ChatModelArguments:
    """`teacher` / `judge`: who answers, judges and scores (a mapping in the recipe)."""

    kind: Literal["openai", "hf", "vllm"] = field(default="hf", metadata={
        "help": "openai: an OpenAI-compatible /v1/chat/completions endpoint (hosted API or `vllm serve`); hf, vllm: "
                "a local model rendered with its LlamaFactory `template`."})
    model: str = field(default="", metadata={
        "help": "The served model name (openai), or a local path / hub name (hf, vllm). Default for a local model: "
                "the `preset`'s."})
    preset: str | None = field(default=None, metadata={"help": "hf, vllm: a model preset (see presets.py)."})
    template: str | None = field(default=None, metadata={"help": "hf, vllm: LlamaFactory template (default: the "
                                                                 "preset's)."})
    base_url: str = field(default="https://api.openai.com/v1", metadata={"help": "openai: the endpoint's /v1 URL."})
    api_key_env: str | None = field(default="OPENAI_API_KEY", metadata={
        "help": "openai: the environment variable holding the API key; null for a server without a key "
                "(a local `vllm serve`)."})
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight at once."})
    max_retries: int = field(default=5, metadata={"help": "openai: retries of a failed request, with backoff."})
    timeout: float = field(default=120.0, metadata={"help": "openai: seconds per request."})
    backoff: float = field(default=1.0, metadata={"help": "openai: first retry delay in seconds, doubled each retry."})
    max_new_tokens: int = field(default=512, metadata={"help": "Length limit of each answer, verdict or score."})
    temperature: float = field(default=0.0, metadata={"help": "0: greedy (local), or the API's most deterministic."})
    reasoning: bool = field(default=False, metadata={
        "help": "openai: an o1/o3-style reasoning model, which refuses `max_tokens` and `temperature`: send the "
                "length limit as `max_completion_tokens` (its hidden reasoning counts against it: raise "
                "`max_new_tokens`) and no temperature."})
    omit_fields: list[Literal["temperature", "top_p", "seed", "max_tokens", "max_completion_tokens"]] = field(
        default_factory=list, metadata={"help": "openai: request fields never sent (the model refuses them), e.g. "
                                                "[seed]; the length limit's field is `max_completion_tokens` when "
                                                "`reasoning`, else `max_tokens`."})
    continue_final_message: bool = field(default=False, metadata={
        "help": "openai, a `vllm serve` endpoint: send the start of the reply a local model is given (the judge's "
                "`[{\"answer\": 1, \"accuracy\": `, the teacher's `VERDICT:`) as an assistant message that the "
                "model continues (vLLM's `continue_final_message`); a hosted API refuses it."})

    def __post_init__(self):
        if self.kind == "openai":
            if not self.model:
                raise ValueError("`model` is required for kind openai (the served model's name)")
        else:
            if self.preset is not None and self.preset not in PRESETS:
                raise ValueError(f"`preset`: unknown preset {self.preset!r}.{did_you_mean(self.preset, PRESETS)}")
            if not self.model and self.preset is None:
                raise ValueError("`model` or `preset` is required for a local model")
        for key in ("concurrency", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"`{key}` must be >= 1, got {getattr(self, key)}")
        if (self.reasoning or self.omit_fields or self.continue_final_message) and self.kind != "openai":
            raise ValueError("`reasoning`, `omit_fields` and `continue_final_message` are settings of an endpoint "
                             "(`kind: openai`)")
        if self.reasoning and "temperature" not in self.omit_fields:
            self.omit_fields = [*self.omit_fields, "temperature"]
        if self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ValueError("`max_retries` must be >= 0, `timeout` > 0, `backoff` >= 0")

    @property
    def local_model(self) -> str:
        return self.model or PRESETS[self.preset].model_name_or_path

    @property
    def local_template(self) -> str:
        return self.template or (PRESETS[self.preset].template if self.preset else "default")

    @property
    def length_field(self) -> str:
        """The request field of the length limit: `max_completion_tokens` for a reasoning model."""
        return "max_completion_tokens" if self.reasoning else "max_tokens"

    def api_key(self) -> str | None:
        """The key read from `api_key_env` (None when no variable is named)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass
class MeteorArguments(InferenceArguments):
    """`semievol-lf meteor run RECIPE`: METEOR's stages on a domain's questions: guidelines -> distill (SFT) ->
refine (SFT every `fine_tune_interval`) -> preferences (SimPO) -> judge every stage's model; a report. Every
finished step is skipped when the run is repeated; an interrupted one resumes from its cache."""

    PROG: ClassVar[str] = "semievol-lf meteor run"
    SECTION: ClassVar[str] = "inference"

    student: str = field(default="smollm2-135m", metadata=_section("model", "The student's model preset."))
    student_model_name_or_path: str | None = field(default=None, metadata=_section(
        "model", "Overrides the preset's model."))
    student_template: str | None = field(default=None, metadata=_section("model", "Overrides the preset's template."))
    teacher: dict = field(default_factory=dict, metadata=_section(
        "model", "The teacher (a mapping, keys at the end of --help), e.g. {kind: openai, model: gpt-4o, "
                 "api_key_env: OPENAI_API_KEY}."))
    judge: dict = field(default_factory=dict, metadata=_section(
        "model", "The judge of stage 4 (same keys); default: the teacher."))
    questions: str = field(default="generated", metadata=_section(
        "dataset", "A JSONL of domain questions ({\"question\": ..., \"category\": ...} per line, an optional "
                   "\"id\"), or `generated` for the built-in demo domain (machine-learning questions)."))
    n_questions: int | None = field(default=None, metadata=_section(
        "dataset", "Use the first N questions (after the test split); null: all."))
    n_test: int = field(default=100, metadata=_section(
        "dataset", "Questions held out for the judge (stage 4), taken from the end of the file (the authors' "
                   "README evaluates 100)."))
    quality_questions: int = field(default=4, metadata=_section(
        "method", "Stage 1: the teacher also answers the first N distillation questions without the guideline, and "
                  "the judge scores both answer sets (METEOR's data-quality table); 0: off."))
    max_revisions: int = field(default=2, metadata=_section(
        "method", "Stage 2: revisions after the first answer, at most: 2 = 3 attempts in total, the authors' "
                  "`max_iterations 3` (was `max_iterations`)."))
    keep_unaccepted: bool = field(default=True, metadata=_section(
        "method", "Stage 2: a question the teacher never accepted keeps its last attempt in the training data "
                  "(the authors' code); false: dropped."))
    fine_tune_interval: int = field(default=10, metadata=_section(
        "method", "Stage 2: an SFT round (one epoch) each time the training items grow by this many."))
    preference_rule: Literal["longer", "likelihood"] = field(default="longer", metadata=_section(
        "method", "Stage 3: which of a question's answers (the greedy one and `num_samples` samples) is preferred: "
                  "longer: the one with the most tokens against the one with the fewest (the authors'); "
                  "likelihood: the highest mean log-probability under the student against the lowest."))
    num_samples: int = field(default=1, metadata=_section(
        "method", "Stage 3: sampled answers beside the greedy one per question; 1: the authors' pair (was `k`)."))
    sample_temperature: float = field(default=0.7, metadata=_section(
        "method", "Stage 3 and stage 4's test answers: the sampling temperature (the authors' 0.7)."))
    sample_top_p: float = field(default=0.9, metadata=_section(
        "method", "Stage 3 and stage 4's test answers: nucleus sampling's top-p (the authors' 0.9)."))
    train_overrides: dict = field(default_factory=dict, metadata=_section(
        "train", "LlamaFactory keys merged into the SFT recipes of stages 1 and 2 (over METEOR's settings, "
                 "training.meteor_train)."))
    dpo_overrides: dict = field(default_factory=dict, metadata=_section(
        "train", "LlamaFactory keys merged into stage 3's preference recipe (LlamaFactory stage `dpo`, "
                 "`pref_loss: simpo` by default), e.g. {pref_loss: sigmoid, pref_beta: 0.1} for DPO against the "
                 "stage-2 student."))
    output_dir: str = field(default="runs/meteor", metadata=_section(
        "output", "Everything the run writes (was `meteor_dir`)."))
    overwrite_output_dir: bool = field(default=False, metadata=_section(
        "output", "Start a step over when its folder holds results made from other inputs."))
    stop_after: Literal["", "guidelines", "distill", "refine", "preferences"] = field(default="", metadata=_section(
        "output", "Stop after this stage (for debugging and tests)."))

    def __post_init__(self):
        super().__post_init__()  # the student's inference settings
        if self.student not in PRESETS:
            raise ValueError(f"`student`: unknown preset {self.student!r}.{did_you_mean(self.student, PRESETS)} "
                             f"Available: {', '.join(PRESETS)}")
        for key in ("fine_tune_interval", "num_samples", "n_test"):
            if getattr(self, key) < 1:
                raise ValueError(f"`{key}` must be >= 1, got {getattr(self, key)}")
        if self.max_revisions < 0:
            raise ValueError(f"`max_revisions` must be >= 0, got {self.max_revisions}")
        if not 0 < self.sample_top_p <= 1 or self.sample_temperature <= 0:
            raise ValueError(f"`sample_top_p` must be in (0, 1] and `sample_temperature` > 0, got "
                             f"{self.sample_top_p} and {self.sample_temperature}")
        if self.quality_questions < 0:
            raise ValueError(f"`quality_questions` must be >= 0, got {self.quality_questions}")
        if self.n_questions is not None and self.n_questions < 1:
            raise ValueError(f"`n_questions` must be >= 1, got {self.n_questions}")
        if self.questions != "generated" and not Path(self.questions).is_file():
            raise ValueError(f"`questions`: {self.questions} is not a file")
        self.teacher_args = self._chat("teacher", self.teacher)
        self.judge_args = self._chat("judge", self.judge or self.teacher)
        for key, args in (("teacher", self.teacher_args), ("judge", self.judge_args)):
            if args.kind == "vllm" and self.backend == "vllm":
                # stage 2 holds the student and the teacher at once; two engines in one process would each claim
                # their gpu_memory_utilization of the same GPU (vLLM's default 0.9 for the teacher's)
                raise ValueError(f"`{key}.kind: vllm` with the student on `backend: vllm` would put two vLLM engines "
                                 "in one process, each claiming its share of the GPU; serve the teacher with `vllm "
                                 f"serve` and set `{key}: {{kind: openai, base_url: http://127.0.0.1:8001/v1, "
                                 "api_key_env: null, model: ...}`, or run the student on `backend: hf`")

    @staticmethod
    def _chat(key: str, values: dict) -> ChatModelArguments:
        try:
            return build_nested(ChatModelArguments, values, key)
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith(f"`{key}.") else f"`{key}`: {message}") from None

    @property
    def preset(self):
        return PRESETS[self.student]

    @property
    def student_model(self) -> str:
        return self.student_model_name_or_path or self.preset.model_name_or_path

    @property
    def template(self) -> str:
        return self.student_template or self.preset.template

    def settings(self, *keys: str) -> dict:
        """The values of `keys` (what a step's results depend on, for its manifest)."""
        values = dataclasses.asdict(self)
        return {k: values[k] for k in keys}

    @staticmethod
    def nested_help() -> list[tuple[str, type]]:
        return [("teacher, judge", ChatModelArguments), *InferenceArguments.nested_help()]
