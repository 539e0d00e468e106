"""`python evaluate.py ...` from the repository root: the same command as the installed `cls-evaluate`
(see cls_decoupling/cli/evaluate.py and README.md)."""

import sys

from cls_decoupling.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
