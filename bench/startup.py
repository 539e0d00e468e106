"""Wall time of a command's start: `--help`, an option error, importing the metrics alone.

    python bench/startup.py [--repeats 3]

Each command runs in a fresh interpreter (from the repository root), `--repeats` times; the table
gives the best and the median wall time, and which of torch, Lightning, transformers and timm the
command imported (read from one more run under `python -X importtime`). `python -c pass` is the
interpreter's own floor and `import torch` the cost of any command that needs torch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "transformers", "timm")
COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "evaluate.py --help": ["evaluate.py", "--help"],
    "evaluate.py --batch-size x (option error)": ["evaluate.py", "--batch-size", "x", "--output", "run"],
    "train_probe.py --help": ["train_probe.py", "--help"],
    "python -c 'import probes.metrics'": ["-c", "import probes.metrics"],
    "python -c 'import torch'": ["-c", "import torch"],
}


def wall_time(arguments: list[str]) -> float:
    """Seconds from start to exit of `python ARGUMENTS` in the repository root (any exit status)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True, check=False)
    return time.perf_counter() - started


def heavy_imports(arguments: list[str]) -> list[str]:
    """Which of `HEAVY` the command imports, from `-X importtime`'s report (one line per module)."""
    report = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in report.splitlines() if line.startswith("import time:")
    }
    return [name for name in HEAVY if name in imported]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (default: 3)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, best / median of {args.repeats} runs, fresh interpreter each")
    print()
    print("| command | best (s) | median (s) | imports |")
    print("|---|---|---|---|")
    for label, arguments in COMMANDS.items():
        times = [wall_time(arguments) for _ in range(args.repeats)]
        heavy = ", ".join(heavy_imports(arguments)) or "none of " + ", ".join(HEAVY)
        print(f"| {label} | {min(times):.2f} | {statistics.median(times):.2f} | {heavy} |", flush=True)


if __name__ == "__main__":
    main()
