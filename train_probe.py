"""`python train_probe.py ...` from the repository root: the same command as the installed
`cls-train-probe` (see cls_decoupling/cli/train_probe.py and README.md)."""

import sys

from cls_decoupling.cli.train_probe import main

if __name__ == "__main__":
    sys.exit(main())
