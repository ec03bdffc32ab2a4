"""tfsft's byte-level BPE tokenizers give exactly the ids of the model's own
tokenizer.json (Hugging Face ``tokenizers`` as the reference): eagerly, inside
tf.data, after a save/reload, and inside a reloaded SavedModel."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from conftest import SHARED
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tfsft.models.backbones import resolve_preset

CODE = '''import os


class Loader:
    """Reads files."""

    def __init__(self, path, retries=3):
        self.path = path  # where   to look
\tif retries > 10:
\t\traise ValueError(f"too many: {retries!r}")

    def load(self):
        with open(self.path) as f:
            return [line.rstrip() for line in f if line.strip()]   \n'''

CORPUS = [
    CODE,
    "  out",
    "x = 1\n\n\n    y = 22\n\t\tz = 333\n",
    "if a  ==  b:\r\n    pass\r\n",
    "Numbers: 0, 7, 42, 1234567, 3.14159, -12e10, 1/2, 1,000,000 and 2024-05-06.",
    "The year 1999 had 365 days; call +1 (555) 010-9999!",
    "Punctuation... !!! ??? -- ``quotes'' «guillemets» [brackets] {braces} <angle>",
    "don't can't I'm we've they'll she'd it's O'Neil 'quoted' ''double''",
    "Café naïve résumé Ångström façade jalapeño Straße",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "emoji 😀👍🏽🇫🇷 and ❤️ and 🧑‍💻",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "text<|im_end|>more<|im_start|><|im_start|>  spaced <|im_end|>",
    "<|endoftext|>",
    "trailing spaces   ",
    "   leading spaces",
    "\n\n\n",
    "tabs\tand\t\tmore\t",
    "nbsp\u00a0and\u3000ideographic\u2009thin\u202fspace \u00a0 x",
    "",
    " ",
]


def fuzz_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Random mixes of the characters and pieces where splitters disagree."""
    spaces = [
        " ",
        " ",
        " ",
        "  ",
        "    ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "\u00a0",
        "\u3000",
    ]
    pool = [
        *"abcXYZ0123456789'.,;:!?()[]{}<>|_-+=*/\\\"#@$%^&~`",
        *spaces * 3,
        *["'s", "'ll", "'re", "é", "ß", "日", "本", "😀", "٣", "½", "Ω"],
        *["<|im_start|>", "<|im_end|>", "def ", "return ", "1234"],
    ]
    rng = random.Random(seed)
    return ["".join(rng.choices(pool, k=rng.randint(0, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    return Path(resolve_preset("smollm2-135m"))


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir: Path) -> Any:
    import keras_hub

    return keras_hub.models.CausalLMPreprocessor.from_preset(str(smollm2_dir)).tokenizer


def in_tf_data(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(32).map(tokenizer)
    return [row for batch in ds for row in batch.to_list()]


def test_smollm2_tokenizer_is_the_exact_subclass(smollm2_tokenizer: Any) -> None:
    from tfsft.models.bpe import LlamaBPETokenizer

    assert isinstance(smollm2_tokenizer, LlamaBPETokenizer)
    assert smollm2_tokenizer.split_digits is True
    assert smollm2_tokenizer.token_to_id("<|im_start|>") == 1
    assert smollm2_tokenizer.end_token_id == smollm2_tokenizer.pad_token_id == 2


def test_smollm2_ids_match_tokenizer_json(
    smollm2_dir: Path, smollm2_tokenizer: Any
) -> None:
    reference = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    texts = CORPUS + fuzz_corpus()
    expected = [reference.encode(t).ids for t in texts]
    eager = [np.asarray(smollm2_tokenizer(t)).tolist() for t in texts]
    assert eager == expected
    assert in_tf_data(smollm2_tokenizer, texts) == expected
    assert [reference.id_to_token(i) for i in expected[1]] == ["Ġ", "Ġout"]


def test_smollm2_detokenize_round_trips(smollm2_tokenizer: Any) -> None:
    texts = CORPUS + fuzz_corpus(100, seed=1)
    ids = in_tf_data(smollm2_tokenizer, texts)
    eager = [smollm2_tokenizer.detokenize(row) for row in ids if row]
    assert eager == [t for t, row in zip(texts, ids, strict=True) if row]
    ds = tf.data.Dataset.from_tensor_slices(tf.ragged.constant(ids, dtype=tf.int32))
    graph = [
        x.numpy().decode()
        for x in ds.batch(16).map(smollm2_tokenizer.detokenize).unbatch()
    ]
    assert graph == texts


def test_saved_tokenizer_and_savedmodel_keep_parity(
    smollm2_tokenizer: Any, tmp_path: Path
) -> None:
    import keras_hub

    # tiny-llama was saved with save_to_preset from the converted SmolLM2 folder.
    reloaded = keras_hub.tokenizers.Tokenizer.from_preset(resolve_preset("tiny-llama"))
    assert type(reloaded) is type(smollm2_tokenizer)
    texts = [*CORPUS[:4], CORPUS[11]]
    expected = in_tf_data(smollm2_tokenizer, texts)
    assert in_tf_data(reloaded, texts) == expected
    assert (reloaded.start_token, reloaded.end_token, reloaded.pad_token_id) == (
        "<|im_start|>",
        "<|im_end|>",
        2,
    )

    class Tokenize(tf.Module):
        def __init__(self, tokenizer: Any) -> None:
            super().__init__()
            self.tokenizer = tokenizer

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts: tf.Tensor) -> tf.Tensor:
            return self.tokenizer(texts).to_tensor(-1)

    tf.saved_model.save(Tokenize(reloaded), str(tmp_path / "saved_model"))
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    dense = loaded(tf.constant(texts)).numpy().tolist()
    assert [[i for i in row if i != -1] for row in dense] == expected


@pytest.fixture(scope="module")
def gpt2_reference() -> Tokenizer:
    folder = SHARED / "gpt2_tokenizer"
    if not (folder / "vocab.json").is_file():
        pytest.skip(f"GPT-2 tokenizer files not found in {folder}")
    reference = Tokenizer(
        models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    )
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    reference.add_special_tokens(["<|endoftext|>"])
    return reference


def test_exact_gpt2_tokenizer_matches_gpt2(gpt2_reference: Tokenizer) -> None:
    from tfsft.models.bpe import ExactGPT2Tokenizer

    folder = SHARED / "gpt2_tokenizer"
    tokenizer = ExactGPT2Tokenizer(
        vocabulary=str(folder / "vocab.json"), merges=str(folder / "merges.txt")
    )
    texts = CORPUS + fuzz_corpus(200, seed=2)
    expected = [gpt2_reference.encode(t).ids for t in texts]
    assert [np.asarray(tokenizer(t)).tolist() for t in texts] == expected
    assert in_tf_data(tokenizer, texts) == expected
    # GPT-2 keeps digits together, unlike SmolLM2.
    assert [gpt2_reference.id_to_token(i) for i in expected[4]][-6:-4] == ["Ġ2024", "-"]
