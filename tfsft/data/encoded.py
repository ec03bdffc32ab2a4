"""`Encoded`: a split as the model sees it, what a task's ``encode`` returns.

Kept free of TensorFlow imports so that tasks can be looked up, and data read and
validated, without loading TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass
class Encoded:
    """A split encoded for the model: one row per model input, ready to batch.

    A task's ``encode`` makes it (`tfsft.tasks`). An example may become several
    rows (a long sentence split into windows); ``example_index`` says which example
    each row encodes, so outputs can be put back together per example.
    """

    features: dict[str, tf.Tensor]  # each [rows, sequence_length] int32
    example_index: np.ndarray  # [rows]
    targets: np.ndarray | None = None  # [rows, ...]; None when there are no labels
    sample_weight: np.ndarray | None = None  # [rows] or [rows, sequence_length]
    # True when targets and weights have one entry per token position, so that
    # trimming a batch's padding trims them too.
    token_level: bool = False

    @property
    def rows(self) -> int:
        return int(self.example_index.shape[0])

    @property
    def width(self) -> int:
        """The padded length every row was encoded to."""
        return int(self.features["padding_mask"].shape[1])

    def lengths(self) -> np.ndarray:
        """Tokens per row [rows], special tokens included (from the padding mask)."""
        return token_lengths(self.features)


def token_lengths(features: dict[str, tf.Tensor]) -> np.ndarray:
    """Tokens per row [N], from the int32 ``padding_mask`` [N, sequence_length]."""
    return np.asarray(features["padding_mask"]).sum(axis=1)
