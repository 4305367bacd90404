"""`semievol-lf run`: the settings of the whole method, and the step configurations built from them.

The run holds the parts its steps share (task, method, inference) instead of copying their
fields; `pseudolabel_args` and `evaluate_args` route those parts by field name into each step's
configuration, as HfArgumentParser routes one flat dict into several dataclasses. `__post_init__`
builds every step configuration of the run, so a bad setting fails while parsing, before
anything is prepared, loaded or trained.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from ..data.demo import DemoSpec
from ..errors import UserError
from ..models.presets import PRESETS, ModelPreset
from ..semievol.layout import RunLayout
from .data_args import TaskArguments
from .inference_args import InferenceArguments
from .method_args import MethodArguments, RetrievalArguments
from .parser import build_nested, did_you_mean
from .step_args import EvaluateArguments, PseudolabelArguments


def _section(name: str, help: str) -> dict:
    return {"help": help, "section": name}


@dataclass
class RunArguments(InferenceArguments, MethodArguments, TaskArguments):
    """`semievol-lf run RECIPE`: prepare -> warm-up -> per round: pseudolabel -> evolve; Vanilla, SFT,
SemiEvol [and RAG] evaluated; a report. Every finished step is skipped when the run is repeated."""

    PROG: ClassVar[str] = "semievol-lf run"
    SECTION: ClassVar[str] = "run"

    source: str = field(default="generated", metadata=_section(
        "dataset", "Folder with labeled/unlabeled/test files, `hf://OWNER/NAME/FOLDER` (a folder of a Hugging Face "
                   "dataset, e.g. hf://luojunyu/SemiEvol/mmlu), or `generated` for the demo task's generated data."))
    model: str = field(default="tiny", metadata=_section("model", "Model preset (see presets.py)."))
    model_name_or_path: str | None = field(default=None, metadata=_section("model", "Overrides the preset's model."))
    template: str | None = field(default=None, metadata=_section("model", "Overrides the preset's template."))
    output_dir: str = field(default="runs/demo", metadata=_section(
        "output", "Everything the run writes goes here (was `run_dir`)."))
    iterations: int = field(default=1, metadata=_section("method", "SemiEvol rounds (paper 4.3.7)."))
    no_iwp: bool = field(default=False, metadata=_section(
        "method", "Ablation w/o IWP: the base model does all the warm model does (collaboration, self-justify, "
                  "entropy): models=[base], judge_model=base."))
    no_icp: bool = field(default=False, metadata=_section(
        "method", "Ablation w/o ICP: n collaborators, all 0-shot (repeated configurations, each request its own "
                  "seed)."))
    no_cl: bool = field(default=False, metadata=_section(
        "method", "Ablation w/o CL: one collaborator, the warm model with the k-shot prompt, no self-justify."))
    no_as: bool = field(default=False, metadata=_section("method", "Ablation: theta=1.0, keep every pseudo-label."))
    rag: bool = field(default=False, metadata=_section(
        "method", "Also evaluate the RAG baseline (base + k examples)."))
    train_overrides: dict = field(default_factory=dict, metadata=_section(
        "train", "LlamaFactory keys merged into both train recipes (warm-up and evolve)."))
    data_seed: int = field(default=0, metadata=_section("dataset", "Seed of the generated demo data."))
    data_sizes: dict = field(default_factory=dict, metadata=_section(
        "dataset", "Sizes of the generated demo data, e.g. {n_labeled: 30} (keys listed at the end of --help)."))
    stop_after: Literal["", "warmup", "pseudolabel", "evolve"] = field(default="", metadata=_section(
        "output", "Stop the first round after this step (for debugging)."))

    def __post_init__(self):
        if self.no_as:
            self.theta = 1.0
        super().__post_init__()  # the task, method and inference checks
        if self.iterations < 1:
            raise ValueError("`iterations` must be >= 1")
        if self.model not in PRESETS:
            raise ValueError(f"`model`: unknown preset {self.model!r}.{did_you_mean(self.model, PRESETS)} "
                             f"Available: {', '.join(PRESETS)}")
        if self.source == "generated" and self.task != "demo":
            raise ValueError("`source: generated` makes demo data; set `task: demo` or point `source` at files")
        self.data_sizes = check_data_sizes(self.data_sizes)
        self._check_word_vocabulary()
        self._check_collaboration()
        self._step_configs()

    # ------------------------------------------------------------------ derived settings
    @property
    def preset(self) -> ModelPreset:
        return PRESETS[self.model]

    @property
    def base_model(self) -> str:
        return self.model_name_or_path or self.preset.model_name_or_path

    @property
    def chat_template(self) -> str:
        return self.template or self.preset.template

    def collaboration(self) -> dict:
        """The method settings the ablation switches change (paper Table 2), for the pseudolabel step.

        w/o CL: one collaborator, the warm model with the k-shot prompt (shots = k); n=1 means no self-justify.
        w/o ICP: all collaborators 0-shot, `n` kept (configurations repeat, each with its own seeds).
        w/o IWP: the base model replaces the warm model everywhere: collaboration, self-justify, entropy.
        Nothing is lowered to fit: an `n` the switches cannot honour is an error (`_check_collaboration`).
        """
        models, shots, n = list(self.models), list(self.shots), self.n
        repeat, judge = self.repeat_configs, self.judge_model
        if self.no_cl:
            models, shots, n = ["warm"], [self.k], 1
        if self.no_icp:
            shots, repeat = [0], True
        if self.no_iwp:
            models, judge = ["base"], "base"
        return {"models": models, "shots": shots, "n": n, "repeat_configs": repeat, "judge_model": judge}

    def _check_word_vocabulary(self) -> None:
        """A word-level demo model (`tiny-word`) knows the words of one generated task only: other
        demo data would reach it as <unk> tokens and nothing could be learned."""
        if self.preset.build_args.get("tokenizer") != "word" or self.model_name_or_path or self.source != "generated":
            return
        vocab = {"cue_words", "fillers"} & set(self.data_sizes)
        if self.data_seed != DemoSpec.seed or vocab:
            what = f"`data_seed`={self.data_seed}" if self.data_seed != DemoSpec.seed else f"`data_sizes.{min(vocab)}`"
            raise ValueError(f"{what}: `model: {self.model}` knows only the words of the demo data of `data_seed` "
                             f"{DemoSpec.seed} with the default cue_words and fillers (its tokenizer is word-level); "
                             "use `model: tiny` (byte-level BPE) for other demo data")

    def _check_collaboration(self) -> None:
        """w/o IWP keeps `n` but draws from the base model's configurations only: too few is an error."""
        c = self.collaboration()
        grid = len(c["models"]) * len(c["shots"])
        if not c["repeat_configs"] and c["n"] > grid:
            raise ValueError(f"`no_iwp` leaves {grid} configuration{'s' if grid > 1 else ''} (base x `shots`) for "
                             f"`n`={self.n} collaborators; lower `n` or add shot counts to `shots`")

    # ------------------------------------------------------------------ step configurations
    def _routed(self, *parts: type) -> dict:
        """This run's values of the fields of `parts` (copies of lists and mappings)."""
        out = {}
        for part in parts:
            for f in dataclasses.fields(part):
                value = getattr(self, f.name)
                out[f.name] = type(value)(value) if isinstance(value, (list, dict)) else value
        return out

    def _step(self, model: str | None, data_dir, adapter, output_dir) -> dict:
        return {"model_name_or_path": model or self.base_model, "template": self.chat_template,
                "adapter_name_or_path": str(adapter) if adapter else None, "data_dir": str(data_dir),
                "output_dir": str(output_dir), "overwrite_output_dir": True}

    def _pseudolabel(self, data_dir, adapter, output_dir, seed: int, exclude_ids_file, model=None):
        return PseudolabelArguments(**{
            **self._routed(TaskArguments, MethodArguments, InferenceArguments), **self.collaboration(),
            **self._step(model, data_dir, adapter, output_dir), "seed": seed,
            "exclude_ids_file": str(exclude_ids_file) if exclude_ids_file else None})

    def _evaluate(self, name: str, data_dir, adapter, output_dir, rag_k: int = 0, model=None):
        return EvaluateArguments(**{
            **self._routed(TaskArguments, RetrievalArguments, InferenceArguments),
            **self._step(model, data_dir, adapter, output_dir), "name": name, "rag_k": rag_k})

    def pseudolabel_args(self, data_dir: str | Path, adapter: str | Path, output_dir: str | Path, seed: int,
                         exclude_ids_file: str | Path | None = None, model: str | None = None) -> PseudolabelArguments:
        """Round r's pseudolabel step (seed = `seed` + r - 1); `model` replaces the preset's path (resolved)."""
        try:
            return self._pseudolabel(data_dir, adapter, output_dir, seed, exclude_ids_file, model)
        except ValueError as err:  # not reached after __post_init__ built it; kept one line all the same
            raise UserError(f"pseudolabel settings of this run: {err}") from None

    def evaluate_args(self, name: str, data_dir: str | Path, adapter: str | Path | None, output_dir: str | Path,
                      rag_k: int = 0, model: str | None = None) -> EvaluateArguments:
        """An evaluate step: greedy, the run's inference settings; `adapter` None = the base model."""
        try:
            return self._evaluate(name, data_dir, adapter, output_dir, rag_k, model)
        except ValueError as err:
            raise UserError(f"evaluate settings of this run: {err}") from None

    def _step_configs(self) -> list:
        """Every step configuration of the run, at the run folder's paths (nothing is read here). Rounds
        differ in paths and seed only, so the first and the last round stand for all."""
        layout = RunLayout(Path(self.output_dir))
        steps = [self._evaluate(name, layout.data, adapter, layout.baseline(name))
                 for name, adapter in [("Vanilla", None), ("SFT", layout.warmup)]]
        if self.rag:
            steps.append(self._evaluate("RAG", layout.data, None, layout.baseline("RAG"), rag_k=self.k))
        for r in sorted({1, self.iterations}):
            steps.append(self._pseudolabel(layout.round_data(r) if r > 1 else layout.data, layout.warmup,
                                           layout.pseudolabel(r), self.seed + r - 1, layout.exclude_ids(r)))
            steps.append(self._evaluate("SemiEvol", layout.data, layout.evolve(r), layout.semievol(r)))
        return steps

    @staticmethod
    def nested_help() -> list[tuple[str, type]]:
        return [*InferenceArguments.nested_help(), ("data_sizes (source: generated)", DemoSizes)]


# The keys of `data_sizes`: DemoSpec without its seed (that is `data_seed`).
DemoSizes = dataclasses.make_dataclass(
    "DemoSizes", [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(DemoSpec)
                  if f.name != "seed"])


def check_data_sizes(values: dict) -> dict:
    """`{"n_labeled": 30}` checked against DemoSpec; raises ValueError naming `data_sizes.KEY`."""
    if "seed" in values:
        raise ValueError("`data_sizes.seed`: set `data_seed` instead")
    sizes = build_nested(DemoSizes, values, "data_sizes")
    for key in values:
        value = getattr(sizes, key)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"`data_sizes.{key}` must be >= 1, got {value}")
        if isinstance(value, float) and not 0 <= value <= 1:
            raise ValueError(f"`data_sizes.{key}` must be in [0, 1], got {value}")
    return {key: getattr(sizes, key) for key in values}
