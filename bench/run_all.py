"""Every benchmark in turn, with the settings the notes report.

    python bench/run_all.py

Takes about 25 minutes on a 2-core CPU (ViT-B at 518 px dominates). The GPU end-to-end benchmark runs only
where CUDA is available.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
RUNS = [
    ["startup.py", "--repeats", "3"],
    ["harness_overhead.py", "--repeats", "4"],
    ["cka_scaling.py", "--dims", "384", "--sizes", "1000,2000,4000,8000"],
    ["probe_compute.py"],
    ["probe_updates.py"],
    ["probe_ops.py"],
    ["pos_interpolation.py"],
    ["data_loading.py"],
]


def main() -> None:
    runs = RUNS + ([["gpu_end_to_end.py"]] if torch.cuda.is_available() else [])
    for script, *arguments in runs:
        print(f"== {script} {' '.join(arguments)}", flush=True)
        subprocess.run([sys.executable, str(BENCH / script), *arguments], check=True)


if __name__ == "__main__":
    main()
