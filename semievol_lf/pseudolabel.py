"""`python -m semievol_lf.pseudolabel ...` is `semievol-lf pseudolabel ...` (see cli.py):
SemiEvol steps 2-5, pseudo-label the unlabeled set."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["pseudolabel", *sys.argv[1:]])
