"""`python -m semievol_lf.run ...` is `semievol-lf run ...` (see cli.py):
The whole method, every step, resumable."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
