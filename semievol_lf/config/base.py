"""The root of every argument part.

A part's `__post_init__` first calls `super().__post_init__()`, then checks its own fields, so a
config composed of several parts runs every part's checks once, in the order of its fields. A
dataclass lists the fields of its LAST base first, so compose parts in reverse reading order:

    class PseudolabelArguments(OutputArguments, InferenceArguments, MethodArguments, DataArguments,
                               ModelArguments)  # fields and checks: model, data, method, inference, output
"""


class Arguments:
    SECTION = ""  # the `### section` this part's fields are listed under in `--help`

    def __post_init__(self) -> None:
        pass
