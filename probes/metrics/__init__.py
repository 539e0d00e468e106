"""Pure torchmetrics Metrics on tensors (docs/design.md#metrics): no model or probe names, every state
reduced across ranks, torchmetrics' keyword arguments passed through, `compute()` returning tensors."""

from probes.metrics.cka import LinearCKA, SharedReferenceCKA, linear_cka
from probes.metrics.faithfulness import Faithfulness
from probes.metrics.held_input import HeldInputAccuracy
from probes.metrics.high_norm import HighNormToken
from probes.metrics.oneshot import OneShotAccuracy, oneshot_accuracy
from probes.metrics.ridge import RidgeAccuracy, is_train_image, ridge_accuracy
from probes.metrics.shares import ShareHistogram, share_histogram
from probes.metrics.stats import ColumnStats, column_stats
from probes.metrics.topk import TopKAccuracy

__all__ = [
    "ColumnStats",
    "Faithfulness",
    "HeldInputAccuracy",
    "HighNormToken",
    "LinearCKA",
    "OneShotAccuracy",
    "RidgeAccuracy",
    "ShareHistogram",
    "SharedReferenceCKA",
    "TopKAccuracy",
    "column_stats",
    "is_train_image",
    "linear_cka",
    "oneshot_accuracy",
    "ridge_accuracy",
    "share_histogram",
]
