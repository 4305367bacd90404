"""The configurations of this package's own steps, composed from the shared parts.

    PseudolabelArguments = model + dataset + method + inference + output (+ rounds and shards)
    EvaluateArguments    = model + dataset + embedder + inference + output (+ split, greedy temperature, RAG)

No field is written twice: each lives in the part that owns it, and `__post_init__` runs every
part's checks (see `base.Arguments`: bases are listed last part first) before the step's own
checks of combinations.
"""

from dataclasses import dataclass, field
from typing import ClassVar

from .data_args import DataArguments
from .inference_args import InferenceArguments, OutputArguments
from .method_args import MethodArguments, RetrievalArguments
from .model_args import ModelArguments


@dataclass
class PseudolabelArguments(OutputArguments, InferenceArguments, MethodArguments, DataArguments, ModelArguments):
    """SemiEvol steps 2-5: ICP retrieval, collaborative inference, self-justify, entropy selection."""

    PROG: ClassVar[str] = "python -m semievol_lf.pseudolabel"
    SECTION: ClassVar[str] = "pseudolabel"

    exclude_ids_file: str | None = field(
        default=None, metadata={"help": "JSON list of unlabeled ids already selected in an earlier round."})
    num_shards: int = field(default=1, metadata={
        "help": "Data parallelism: label the unlabeled set in this many shards (one process each, `shard`), "
                "then run once without `shard` to merge them and select over the union."})
    shard: int | None = field(default=None, metadata={
        "help": "The shard this process labels, 0 .. `num_shards`-1; unset with `num_shards` > 1 = the merge."})

    def __post_init__(self):
        super().__post_init__()
        uses_warm = "warm" in self.models or self.judge_model == "warm"
        if not self.adapter_name_or_path and uses_warm:  # `justify` does not avoid it: step 4 scores with it
            raise ValueError("`adapter_name_or_path` is required: pseudo-labeling measures the entropy of every "
                             "pseudo-label under the warm model (the warm-up's output_dir), whatever `justify` "
                             "says; only `models=[base]` with `judge_model=base` (w/o IWP) runs without it")
        if self.num_shards < 1:
            raise ValueError(f"`num_shards` must be >= 1, got {self.num_shards}")
        if self.shard is not None and self.num_shards == 1:
            raise ValueError("`shard` is set but `num_shards` is 1: set `num_shards` to the number of shards (> 1)")
        if self.shard is not None and not 0 <= self.shard < self.num_shards:
            raise ValueError(f"`shard` must be in [0, `num_shards`) = [0, {self.num_shards}), got {self.shard}")


@dataclass
class EvaluateArguments(OutputArguments, InferenceArguments, RetrievalArguments, DataArguments, ModelArguments):
    """Accuracy of base or base + adapter on the task's test set (greedy by default)."""

    PROG: ClassVar[str] = "python -m semievol_lf.evaluate"
    SECTION: ClassVar[str] = "evaluate"

    split: str = field(default="test", metadata={"help": "Which prepared split to score."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (deterministic)."})
    rag_k: int = field(default=0, metadata={
        "help": "Prepend this many retrieved labeled examples (RAG baseline); retrieved with `embedder`."})
    name: str = field(default="", metadata={"help": "Label of this model in reports (Vanilla, SFT, SemiEvol)."})

    def __post_init__(self):
        super().__post_init__()
        for key in ("temperature", "rag_k"):
            if getattr(self, key) < 0:
                raise ValueError(f"`{key}` must be >= 0, got {getattr(self, key)}")
