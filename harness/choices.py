"""Option values of the model side, without importing torch or the model libraries (the command line's
choices)."""

POS_INTERPOLATIONS: tuple[str, ...] = ("original", "hf")
"""`original`: the authors' resize (DINOv2's torch.hub models, DINO v1); `hf`: as transformers does."""

RELEASED_HEADS: dict[str, int] = {"dinov2": 1, "dinov2_linear4": 4}
"""`--head` words for the linear head its authors released for the backbone -> the blocks it reads:
`dinov2` the one-block heads of DINOv2's README table, `dinov2_linear4` the four-block heads (the
default of their hub's `dinov2_vit*14_lc`)."""

RANDOM_PREFIX = "random:"
"""`random:<arch>[_reg]`: a model of a released architecture with random weights (tests, benchmarks,
and a recipe's stand-in for the released weights)."""
