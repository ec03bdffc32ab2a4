"""Importing Llama-family GGUF checkpoints as Hugging Face-format model folders.

A GGUF file (llama.cpp's format) holds quantized weights and the tokenizer as
metadata. `import_gguf` dequantizes every tensor to float32 with the ``gguf``
package, undoes llama.cpp's rotary row permutation of the q/k projections, and
writes what keras-hub's Llama3 classes (and ``transformers``) load: ``config.json``
(a ``LlamaForCausalLM``), ``model.safetensors``, ``tokenizer.json``, ``vocab.json``,
``merges.txt``, ``tokenizer_config.json`` (special tokens, chat template),
``special_tokens_map.json`` and ``generation_config.json``.

keras-hub needs `tfsft.models.decoders.register_decoders()` to read that folder
faithfully (RMS-norm epsilon, no start token, exact tokenizer); see that module.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tfsft.errors import ConfigError

GGUF_MAGIC = b"GGUF"
# llama.cpp pre-tokenizer names whose split tfsft reproduces exactly: GPT-2's regex,
# preceded for the first set by a split of every digit (llama.cpp's "\p{N}" step,
# `Digits(individual_digits=True)` in `tokenizers`). Other names use other regexes.
DIGIT_PRE_TOKENIZERS = {"smollm", "starcoder", "refact", "codeshell"}
PRE_TOKENIZERS = DIGIT_PRE_TOKENIZERS | {"gpt2", "mpt", "olmo"}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types of added tokens
_ADDED_FLAGS = dict.fromkeys(("lstrip", "normalized", "rstrip", "single_word"), False)
# GGUF tensor name (per block after "blk.N.") -> Hugging Face Llama name.
_BLOCK_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def import_gguf(path: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Converts a Llama-family GGUF file into a Hugging Face-format folder.

    The folder is written to a temp dir next to ``out_dir`` and renamed into place,
    so an interrupted import leaves nothing half-written.

    Args:
        path: the ``.gguf`` file.
        out_dir: the folder to create.
        force: replace ``out_dir`` if it exists (otherwise that is an error).

    Returns:
        ``out_dir``.

    Raises:
        ConfigError: the file is missing or not GGUF, its architecture is not
            llama, a tensor's quantization cannot be dequantized, metadata is
            missing, or ``out_dir`` exists without ``force``.
    """
    path, out = Path(path), Path(out_dir)
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists; pass --force to overwrite it")
    reader = open_gguf(path)
    meta = read_metadata(reader, path)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_model(reader, meta, path, tmp)
        write_tokenizer(meta, tmp)
        _replace(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replace(tmp: Path, out: Path, force: bool) -> None:
    if out.exists():
        if not force:
            raise ConfigError(f"{out}: already exists; pass --force to overwrite it")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def open_gguf(path: Path) -> Any:
    """A `gguf.GGUFReader` on ``path``, with a clear error for other files."""
    import gguf

    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ConfigError(
            f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "give a llama.cpp .gguf model file"
        )
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ConfigError(f"{path}: unreadable GGUF file ({e}); is it complete?") from e


def _field(reader: Any, key: str, path: Path, default: Any = ...) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ConfigError(
                f"{path}: GGUF metadata '{key}' is missing; the file is incomplete "
                "or was not written by llama.cpp's converter"
            )
        return default
    return field.contents()


def read_metadata(reader: Any, path: Path) -> dict[str, Any]:
    """The model and tokenizer facts of a llama GGUF file, checked.

    Raises:
        ConfigError: for another architecture, a tokenizer other than byte-level
            BPE with a supported pre-tokenizer, or missing metadata.
    """
    arch = _field(reader, "general.architecture", path)
    if arch != "llama":
        raise ConfigError(
            f"{path}: architecture '{arch}' is not supported; import-gguf converts "
            "Llama-family models (general.architecture = llama) only"
        )
    tok_model = _field(reader, "tokenizer.ggml.model", path)
    if tok_model != "gpt2":
        raise ConfigError(
            f"{path}: tokenizer model '{tok_model}' is not supported; only byte-level "
            "BPE tokenizers (tokenizer.ggml.model = gpt2) convert exactly"
        )
    pre = _field(reader, "tokenizer.ggml.pre", path, "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise ConfigError(
            f"{path}: pre-tokenizer '{pre}' is not supported (supported: "
            f"{', '.join(sorted(PRE_TOKENIZERS))})"
        )
    heads = int(_field(reader, "llama.attention.head_count", path))
    hidden = int(_field(reader, "llama.embedding_length", path))
    head_dim = hidden // heads
    for key in ("llama.attention.key_length", "llama.rope.dimension_count"):
        value = _field(reader, key, path, head_dim)
        if int(value) != head_dim:
            raise ConfigError(
                f"{path}: {key} = {value} differs from hidden/heads = {head_dim}; "
                "keras-hub's Llama needs full-width rotary heads"
            )
    if _field(reader, "llama.rope.scaling.type", path, "none") not in ("none", None):
        raise ConfigError(f"{path}: rope scaling is not supported by import-gguf")
    tokens = list(_field(reader, "tokenizer.ggml.tokens", path))
    eos = int(_field(reader, "tokenizer.ggml.eos_token_id", path))
    return {
        "layers": int(_field(reader, "llama.block_count", path)),
        "hidden": hidden,
        "ffn": int(_field(reader, "llama.feed_forward_length", path)),
        "heads": heads,
        "kv_heads": int(_field(reader, "llama.attention.head_count_kv", path, heads)),
        "context": int(_field(reader, "llama.context_length", path)),
        "eps": _shortest(
            _field(reader, "llama.attention.layer_norm_rms_epsilon", path)
        ),
        "rope_theta": _shortest(_field(reader, "llama.rope.freq_base", path, 10000.0)),
        "tokens": tokens,
        "token_types": list(_field(reader, "tokenizer.ggml.token_type", path, [])),
        "merges": list(_field(reader, "tokenizer.ggml.merges", path)),
        "split_digits": pre in DIGIT_PRE_TOKENIZERS,
        "bos": int(_field(reader, "tokenizer.ggml.bos_token_id", path, eos)),
        "eos": eos,
        "pad": int(_field(reader, "tokenizer.ggml.padding_token_id", path, eos)),
        "unk": _field(reader, "tokenizer.ggml.unknown_token_id", path, None),
        "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", path, False)),
        "chat_template": _field(reader, "tokenizer.chat_template", path, None),
    }


def _shortest(value: float) -> float:
    # GGUF stores float32: 1e-5 reads back as 9.9999997e-06; keep the short form.
    return float(str(np.float32(value)))


def hf_tensor_name(name: str) -> str | None:
    """The Hugging Face Llama name of a GGUF tensor (None if it has none)."""
    if name in _TOP_TENSORS:
        return _TOP_TENSORS[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        suffix = _BLOCK_TENSORS.get(parts[2])
        return f"model.layers.{parts[1]}.{suffix}" if suffix else None
    return None


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row permutation (``[out, in]`` rows, per head).

    Hugging Face rotates the two halves of each head's rows; llama.cpp interleaves
    them (row ``2j + r`` of a head holds HF row ``r * head_dim / 2 + j``).
    """
    out_dim = weight.shape[0]
    half = out_dim // num_heads // 2
    rows = weight.reshape(num_heads, half, 2, *weight.shape[1:])
    return rows.swapaxes(1, 2).reshape(weight.shape)


def convert_tensors(
    reader: Any, meta: dict[str, Any], path: Path
) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32 under its Hugging Face name."""
    from gguf.quants import dequantize

    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name is None:
            raise ConfigError(
                f"{path}: tensor '{tensor.name}' has no Llama equivalent; the model "
                "is not a plain Llama"
            )
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as e:
            raise ConfigError(
                f"{path}: tensor '{tensor.name}' is quantized as "
                f"{tensor.tensor_type.name}, which the gguf package cannot dequantize; "
                "use a GGUF with F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0 or K-quant "
                "tensors"
            ) from e
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ne0 first
        values = np.ascontiguousarray(values.reshape(shape), dtype=np.float32)
        if name.endswith("q_proj.weight"):
            values = unpermute_rotary(values, meta["heads"])
        elif name.endswith("k_proj.weight"):
            values = unpermute_rotary(values, meta["kv_heads"])
        tensors[name] = values
    _check_tensors(tensors, meta, path)
    return tensors


def _check_tensors(
    tensors: dict[str, np.ndarray], meta: dict[str, Any], path: Path
) -> None:
    needed = ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{suffix}"
        for i in range(meta["layers"])
        for suffix in _BLOCK_TENSORS.values()
    ]
    if missing := [n for n in needed if n not in tensors]:
        raise ConfigError(f"{path}: tensors missing: {', '.join(missing[:5])}")
    rows = tensors["model.embed_tokens.weight"].shape[0]
    if rows != len(meta["tokens"]):
        raise ConfigError(
            f"{path}: the embedding has {rows} rows but the tokenizer "
            f"{len(meta['tokens'])} tokens"
        )


def write_model(reader: Any, meta: dict[str, Any], path: Path, out: Path) -> None:
    """Writes ``model.safetensors``, ``config.json`` and ``generation_config.json``."""
    from safetensors.numpy import save_file

    tensors = convert_tensors(reader, meta, path)
    tied = "lm_head.weight" not in tensors
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    ids = {k: meta[k] for k in ("bos", "eos", "pad")}
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(meta["tokens"]),
        "hidden_size": meta["hidden"],
        "intermediate_size": meta["ffn"],
        "num_hidden_layers": meta["layers"],
        "num_attention_heads": meta["heads"],
        "num_key_value_heads": meta["kv_heads"],
        "head_dim": meta["hidden"] // meta["heads"],
        "hidden_act": "silu",
        "max_position_embeddings": meta["context"],
        "rms_norm_eps": meta["eps"],
        "rope_theta": meta["rope_theta"],
        "rope_scaling": None,
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        "torch_dtype": "float32",
        "use_cache": True,
    }
    _write_json(out / "config.json", config)
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids["bos"],
            "eos_token_id": ids["eos"],
            "pad_token_id": ids["pad"],
        },
    )


def write_tokenizer(meta: dict[str, Any], out: Path) -> None:
    """Writes the tokenizer files (``tokenizer.json`` built with ``tokenizers``)."""
    import tokenizers as hf

    tokens, types = meta["tokens"], meta["token_types"] or [1] * len(meta["tokens"])
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in meta["merges"]]
    tokenizer = hf.Tokenizer(hf.models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    steps = (
        [hf.pre_tokenizers.Digits(individual_digits=True)]
        if meta["split_digits"]
        else []
    )
    steps.append(hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    tokenizer.pre_tokenizer = hf.pre_tokenizers.Sequence(steps)
    tokenizer.post_processor = hf.processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = hf.decoders.ByteLevel()
    # Added tokens are matched whole in text; control tokens are also "special".
    added = [
        hf.AddedToken(tokens[i], special=t == _CONTROL, normalized=False)
        for i, t in enumerate(types)
        if t in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_special_tokens([t for t in added if t.special])
    tokenizer.add_tokens([t for t in added if not t.special])
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "vocab.json", vocab)
    merges_text = "#version: 0.2\n" + "".join(f"{m}\n" for m in meta["merges"])
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")
    special = {
        "bos_token": tokens[meta["bos"]],
        "eos_token": tokens[meta["eos"]],
        "pad_token": tokens[meta["pad"]],
    }
    if meta["unk"] is not None:
        special["unk_token"] = tokens[int(meta["unk"])]
    _write_json(out / "special_tokens_map.json", special)
    config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": meta["add_bos"],
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": meta["context"],
        **special,
        "added_tokens_decoder": {
            str(vocab[t.content]): {
                **_ADDED_FLAGS,
                "content": t.content,
                "special": t.special,
            }
            for t in added
        },
    }
    if meta["chat_template"]:
        config["chat_template"] = meta["chat_template"]
    _write_json(out / "tokenizer_config.json", config)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
