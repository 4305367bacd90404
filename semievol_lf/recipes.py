"""`python -m semievol_lf.recipes ...` is `semievol-lf recipes ...` (see cli.py):
Generate this project's recipes, or validate recipes."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["recipes", *sys.argv[1:]])
