"""`python -m semievol_lf.evaluate ...` is `semievol-lf evaluate ...` (see cli.py):
Accuracy and answer entropy of a model on a prepared split."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
