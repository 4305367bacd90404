"""The task and the prepared data folder a step reads."""

from dataclasses import dataclass, field
from typing import ClassVar

from ..data.tasks import get_task
from ..errors import UserError
from .base import Arguments


@dataclass
class TaskArguments(Arguments):
    SECTION: ClassVar[str] = "dataset"

    task: str = field(default="demo", metadata={
        "help": "A built-in task (templates/tasks/: mmlu, mmlu_pro, arc, fpb, usmle, pubmedqa, convfinqa, demo) or "
                "the path of a task file (README, 'Your own task')."})

    def __post_init__(self):
        super().__post_init__()
        try:
            get_task(self.task)
        except UserError as err:
            raise ValueError(f"`task`: {err}") from None


@dataclass
class DataArguments(TaskArguments):
    data_dir: str = field(default="", metadata={"help": "Prepared data folder (labeled/unlabeled/test .json)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.data_dir:
            raise ValueError("`data_dir` is required (the folder `python -m semievol_lf.prepare` wrote)")
