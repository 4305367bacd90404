"""The root of every argument part: parts check their own fields in `__post_init__` and then call
`super().__post_init__()`, so a config composed of several parts runs every part's checks once."""


class Arguments:
    SECTION = ""  # the `### section` this part's fields are listed under in `--help`

    def __post_init__(self) -> None:
        pass
