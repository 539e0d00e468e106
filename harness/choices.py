"""Option values of the model side, without importing torch or the model libraries (the command line's
choices)."""

POS_INTERPOLATIONS: tuple[str, ...] = ("original", "hf")
"""`original`: as the torch.hub models; `hf`: as transformers' DINOv2 classes."""
