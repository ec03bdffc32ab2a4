"""Tiny random decoders for tests: a GPT-2 with the real GPT-2 tokenizer.

Like the tiny BERT (`tfsft.models.backbones.ensure_tiny_preset`), they are saved once
as local keras-hub presets, so every test exercises ``from_preset`` with no network.
The tokenizer is the real one (``../shared/data/gpt2_tokenizer/``, or the folder
``$TFSFT_GPT2_TOKENIZER`` names), so tests see real byte-level BPE tokenizations.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tfsft.errors import ConfigError

_TINY_GPT2_VERSION = 3  # bump when the architecture changes
GPT2_TOKENIZER_ENV = "TFSFT_GPT2_TOKENIZER"


def gpt2_tokenizer_dir() -> Path:
    """The folder holding GPT-2's vocab.json and merges.txt."""
    folder = Path(
        os.environ.get(GPT2_TOKENIZER_ENV) or "../shared/data/gpt2_tokenizer"
    ).expanduser()
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise ConfigError(
            f"model.preset: 'tiny-gpt2' needs GPT-2's vocab.json and merges.txt in "
            f"{folder.resolve()}; set {GPT2_TOKENIZER_ENV} to the folder holding them"
        )
    return folder


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Builds test presets in float32 whatever the global policy a run has set
    (keras-hub's tokenizers reject a mixed policy, and the weights are saved as
    they are built)."""
    import keras

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


def ensure_tiny_gpt2(path: Path | None = None) -> Path:
    """Creates (once) and returns the tiny random GPT-2 preset dir."""
    from tfsft.models.backbones import cache_dir

    path = path or cache_dir() / f"tiny-gpt2-v{_TINY_GPT2_VERSION}"
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        return path
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with float32_policy():
        make_tiny_gpt2(tmp)
    try:
        tmp.rename(path)
    except OSError:  # a parallel test worker won the race; use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def make_tiny_gpt2(path: Path, seed: int = 0) -> None:
    """Saves a 2-layer, hidden-128 GPT-2 with the real GPT-2 tokenizer as a preset."""
    import keras
    import keras_hub

    folder = gpt2_tokenizer_dir()
    keras.utils.set_random_seed(seed)
    from tfsft.models.bpe import ExactGPT2Tokenizer

    # GPT-2's own split (keras-hub's differs on runs of whitespace).
    tokenizer = ExactGPT2Tokenizer(
        vocabulary=str(folder / "vocab.json"), merges=str(folder / "merges.txt")
    )
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_heads=4,
        hidden_dim=128,
        intermediate_dim=256,
        max_sequence_length=256,
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer, sequence_length=256, add_start_token=False
    )
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(path))
    preprocessor.save_to_preset(str(path))
