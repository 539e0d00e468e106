"""What an intervention costs: one decomposing pass with interventions against the same pass without,
same process, alternating rounds (issue 21's cost row).

    PYTHONPATH=. python bench/interventions.py [--backbone random:dinov2_vits14_reg] [--resolution 224]
                                                [--batch-size 8] [--repeats 5]

Rows (median seconds per batch, and the median per-round ratio to the plain decomposing pass):
- clean: `DecomposingBackbone` alone (the baseline);
- each intervention alone: register@last (model level: one more pass of the last block only),
  register@first (one more pass of every block), cls+skip@last:readout (the last block's [CLS]
  row rebuilt), at mode `mean` (the reference statistics read from memory);
- all four modes of register@last together;
- the reference pass (`record_reference`) for those four, per batch: what `--reference-limit`
  images cost once before the run.
An intervention from block l costs about (L - l + 1) / L of a forward: the blocks before l are not
run again (`Intervention.run` starts from the input the clean pass kept).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_ratio, paired_times
from harness import load_backbone
from harness.extras import ReferenceStatistics, parse_intervention
from harness.extras.interventions.recording import record_reference


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="random:dinov2_vits14_reg")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone(args.backbone)
    depth = backbone.info.num_layers
    pixels = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    indices = torch.arange(args.batch_size)
    specs = {
        "register@last:mean": ["register@last:mean"],
        "register@1:mean": ["register@1:mean"],
        "cls+skip@last:mean:readout": ["cls+skip@last:mean:readout"],
        "register@last: 4 modes": [f"register@last:{mode}" for mode in ("zero", "mean", "shuffle", "noise")],
    }
    parsed = {name: [parse_intervention(text, depth) for text in texts] for name, texts in specs.items()}
    every = [intervention for interventions in parsed.values() for intervention in interventions]
    reference = ReferenceStatistics(bank_size=args.batch_size)
    with torch.inference_mode():
        record_reference(backbone, pixels, indices + 10_000, every, reference)
        functions = {"clean": lambda: backbone(pixels, indices)}
        for name, interventions in parsed.items():
            using = [intervention.using(reference) for intervention in interventions]
            functions[name] = lambda extras=using: backbone(pixels, indices, extras=extras)
        functions["reference pass (4 modes)"] = lambda: record_reference(
            backbone,
            pixels,
            indices,
            parsed["register@last: 4 modes"],
            ReferenceStatistics(bank_size=args.batch_size),
        )
        times = paired_times(functions, args.repeats)
    shape = f"{depth} blocks, {args.resolution} px, batch {args.batch_size}"
    print(f"{args.backbone}, {shape}, {args.repeats} rounds")
    print("| pass | s / batch | x clean |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {median_ratio(values, times['clean']):.2f} |")


if __name__ == "__main__":
    main()
