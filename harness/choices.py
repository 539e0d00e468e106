"""Option values of the model side, without importing torch or the model libraries (the command line's
choices)."""

POS_INTERPOLATIONS: tuple[str, ...] = ("original", "hf")
"""`original`: the authors' resize (DINOv2's torch.hub models, DINO v1); `hf`: as transformers does."""
