"""`python -m semievol_lf.prepare ...` is `semievol-lf prepare ...` (see cli.py):
Validate a task's files and write them as LlamaFactory datasets."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["prepare", *sys.argv[1:]])
