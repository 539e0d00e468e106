"""Entry points (docs/design.md#layers): `cls-evaluate` and `cls-train-probe`, also run as
`python evaluate.py` / `python train_probe.py` from the repository root."""
