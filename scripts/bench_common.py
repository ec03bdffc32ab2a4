"""What every benchmark process shares: the FLOP model and the spec/result files.

Standard library only: the Hugging Face runner imports this module from its own venv,
where neither tfsft nor TensorFlow is installed.

Training FLOPs (documented in docs/benchmarks.md, tested in tests/test_benchmark.py):

    6 * P_token * T  +  12 * n_layers * d_model * sum(s_i ** 2)  +  6 * P_seq * S

- ``P_token``: parameters applied to every token (the encoder layers: attention
  projections, feed-forward, LayerNorms), i.e. non-embedding parameters. Embedding
  lookups are gathers, not matmuls, so they count nothing.
- ``T``: real (non-padding) tokens trained on, [CLS] and [SEP] included.
- the attention term: per layer a sequence of s real tokens costs 2*s*s*d FLOPs for
  Q.K^T and 2*s*s*d for attention.V forward, times 3 for forward + backward.
- ``P_seq``: parameters applied once per sequence (pooler and classifier), ``S``
  sequences. The 6 is 2 (multiply-add) x 3 (forward, backward for activations,
  backward for weights), as in Kaplan et al. 2020 / PaLM appendix B.

Padding, softmax, GELU, LayerNorm arithmetic and the optimizer update are left out:
MFU then measures useful work, so a run that pads to 64 tokens scores lower than one
that pads each batch only as far as it needs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EncoderDims:
    """The shape of a BERT-style encoder, read from a Hugging Face config.json."""

    hidden: int
    layers: int
    intermediate: int

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> EncoderDims:
        return cls(
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            intermediate=int(config["intermediate_size"]),
        )

    @property
    def per_token_params(self) -> int:
        """Non-embedding parameters: what every token is multiplied through."""
        h, i = self.hidden, self.intermediate
        attention = 4 * (h * h + h)  # query, key, value, output: kernel + bias
        feed_forward = (h * i + i) + (i * h + h)
        layer_norms = 2 * 2 * h  # after attention and after the feed-forward
        return self.layers * (attention + feed_forward + layer_norms)

    def per_sequence_params(self, num_classes: int) -> int:
        """Pooler (dense + tanh on [CLS]) and the classification layer."""
        h = self.hidden
        return (h * h + h) + (h * num_classes + num_classes)


@dataclass(frozen=True)
class TokenStats:
    """Real-token statistics of what a run trained on (all epochs together)."""

    sequences: int
    tokens: int
    tokens_squared: int  # sum over sequences of (real length) ** 2

    @classmethod
    def from_lengths(cls, lengths: list[int], epochs: int = 1) -> TokenStats:
        return cls(
            sequences=len(lengths) * epochs,
            tokens=sum(lengths) * epochs,
            tokens_squared=sum(n * n for n in lengths) * epochs,
        )

    @classmethod
    def fixed(cls, batch: int, seq: int, steps: int) -> TokenStats:
        """``steps`` batches of ``batch`` sequences with no padding at all."""
        n = batch * steps
        return cls(sequences=n, tokens=n * seq, tokens_squared=n * seq * seq)


def training_flops(dims: EncoderDims, stats: TokenStats, num_classes: int) -> float:
    """Estimated training FLOPs (forward + backward) for ``stats`` (see module doc)."""
    dense = 6 * dims.per_token_params * stats.tokens
    attention = 12 * dims.layers * dims.hidden * stats.tokens_squared
    head = 6 * dims.per_sequence_params(num_classes) * stats.sequences
    return float(dense + attention + head)


def mfu(flops: float, seconds: float, peak_flops_per_second: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the measured matmul peak."""
    if seconds <= 0 or peak_flops_per_second <= 0:
        return float("nan")
    return flops / seconds / peak_flops_per_second


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Writes via a temp file and rename, so a reader never sees half a result."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def child_args(argv: list[str] | None = None) -> tuple[dict[str, Any], Path]:
    """``SPEC.json OUT.json`` from a runner's command line: the spec and where to
    write the result."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit(f"usage: {Path(sys.argv[0]).name} SPEC.json OUT.json")
    return read_json(argv[0]), Path(argv[1])
