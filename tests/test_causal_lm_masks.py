"""Loss masks of causal-LM SFT, on exact tokenizations by the models' own tokenizers.

Each expected sequence is built independently of tfsft's encoder: the template's
text pieces are tokenized with Hugging Face ``tokenizers`` (GPT-2 from its
vocab/merges, SmolLM2 from its tokenizer.json), each piece given the weight the
issue prescribes (responses and the end token of every trained assistant turn: 1;
everything else: 0), and shifted by one (position t predicts token t + 1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
from conftest import SHARED

from tfsft.config import validate_config
from tfsft.errors import DataError
from tfsft.models.backbones import resolve_preset
from tfsft.tasks import get_task

TASK = get_task("causal_lm")
GPT2 = SHARED / "gpt2_tokenizer"
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n"
)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def encode(cfg: Any, train: Path, packed: bool = False) -> tuple[Any, Any, Any]:
    """(Encoded, examples, preprocessor), encoded as the trainer encodes them."""
    examples = TASK.load_examples(str(train), cfg.data, "train")
    preprocessor = TASK.load_preprocessor(
        resolve_preset(cfg.model.preset), cfg.model.sequence_length
    )
    labels = TASK.build_labels(examples, cfg.data)
    fn = TASK.encode_train if packed else TASK.encode
    return fn(examples, preprocessor, labels, cfg), examples, preprocessor


def config(tmp_path: Path, records: list[dict], preset: str, length: int = 128, **data):
    train = write_jsonl(tmp_path / "train.jsonl", records)
    cfg = validate_config(
        {
            "name": "masks",
            "task": "causal_lm",
            "data": {"train": str(train), **data},
            "model": {"preset": preset, "sequence_length": length},
        }
    )
    return cfg, train


def expected(pieces: list[tuple[list[int], float]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and the shifted weights (weight of the token each position
    predicts) of a sequence given as (ids, weight) pieces."""
    ids = np.concatenate([np.asarray(p, np.int32) for p, _ in pieces])
    w = np.concatenate([np.full(len(p), wt, np.float32) for p, wt in pieces])
    return ids, np.concatenate([w[1:], [0.0]]).astype(np.float32)


def row(encoded: Any, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(np.asarray(encoded.features["padding_mask"])[i].sum())
    ids = np.asarray(encoded.features["token_ids"])[i, :n]
    return ids, encoded.sample_weight[i, :n], encoded.targets[i, :n]


@pytest.fixture(scope="module")
def gpt2() -> tokenizers.Tokenizer:
    if not GPT2.is_dir():
        pytest.skip(f"GPT-2 tokenizer not found at {GPT2}")
    return tokenizers.ByteLevelBPETokenizer(
        str(GPT2 / "vocab.json"), str(GPT2 / "merges.txt")
    )


@pytest.fixture(scope="module")
def smollm2() -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(
        str(Path(resolve_preset("smollm2-135m")) / "tokenizer.json")
    )


def ids_of(tok: tokenizers.Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


@pytest.mark.realdata
@pytest.mark.parametrize("with_input", [False, True])
def test_alpaca_masks_prompt_and_trains_response_and_eos(tmp_path, gpt2, with_input):
    record = {
        "instruction": "Translate to French.",
        "input": "Good morning" if with_input else "",
        "output": "Bonjour, mon ami.",
    }
    cfg, train = config(tmp_path, [record], "tiny-gpt2", template="alpaca")
    encoded, _, _ = encode(cfg, train)
    user = "Translate to French."
    if with_input:
        user += "\n\n### Input:\nGood morning"
    prompt = f"{ALPACA_SYSTEM}### Instruction:\n{user}\n\n### Response:\n"
    eos = 50256  # <|endoftext|>
    want_ids, want_w = expected(
        [
            (ids_of(gpt2, prompt), 0.0),
            ([*ids_of(gpt2, "Bonjour, mon ami."), eos], 1.0),
            (ids_of(gpt2, "\n\n"), 0.0),
        ]
    )
    ids, w, targets = row(encoded, 0)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(w, want_w)
    np.testing.assert_array_equal(targets[:-1], ids[1:])
    # What is trained, read back: exactly the response and the end token.
    assert gpt2.decode(targets[w > 0][:-1].tolist()) == "Bonjour, mon ami."
    assert targets[w > 0][-1] == eos


CHAT = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "value": "Hi there"}]},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": [{"type": "text", "value": "4"}]},
    ]
}


def chatml(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def test_multi_turn_chat_trains_every_assistant_turn_and_its_end(tmp_path, smollm2):
    cfg, train = config(tmp_path, [CHAT], "tiny-llama", template="chatml")
    encoded, _, preprocessor = encode(cfg, train)
    end = 2  # <|im_end|>, SmolLM2's EOS
    first = chatml("system", "You are terse.") + chatml("user", "Hi there")
    second = "\n" + chatml("user", "What is 2+2?")
    want_ids, want_w = expected(
        [
            (ids_of(smollm2, first + "<|im_start|>assistant\n"), 0.0),
            ([*ids_of(smollm2, "Hello!"), end], 1.0),
            (ids_of(smollm2, second + "<|im_start|>assistant\n"), 0.0),
            ([*ids_of(smollm2, "4"), end], 1.0),
            (ids_of(smollm2, "\n"), 0.0),
        ]
    )
    ids, w, _ = row(encoded, 0)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(w, want_w)
    # The pieces join into exactly what the model's own tokenizer gives for the
    # whole conversation (its chat template's rendering).
    whole = first + "<|im_start|>assistant\nHello!<|im_end|>" + second
    whole += "<|im_start|>assistant\n4<|im_end|>\n"
    assert ids.tolist() == ids_of(smollm2, whole)
    assert TASK.stop_ids(preprocessor, cfg) == [end]


def test_loss_weight_zero_turn_is_not_trained(tmp_path, smollm2):
    record = json.loads(json.dumps(CHAT))
    record["messages"][2]["loss_weight"] = 0.0  # "Hello!"
    record["messages"][3]["loss_weight"] = 0.0  # a user turn, as in the demo data
    record["messages"][4]["loss_weight"] = 1.0
    cfg, train = config(tmp_path, [record], "tiny-llama", template="chatml")
    encoded, _, _ = encode(cfg, train)
    ids, w, targets = row(encoded, 0)
    trained = smollm2.decode(targets[w > 0].tolist(), skip_special_tokens=False)
    assert trained == "4<|im_end|>"
    # The default system prompt is not added when the record has one.
    assert smollm2.decode(ids.tolist(), skip_special_tokens=False).count("system") == 1


def test_train_on_prompt_trains_everything_but_zero_weight_turns(tmp_path):
    cfg, train = config(
        tmp_path, [CHAT], "tiny-llama", template="chatml", train_on_prompt=True
    )
    encoded, _, _ = encode(cfg, train)
    _, w, _ = row(encoded, 0)
    assert (w[:-1] == 1).all() and w[-1] == 0  # the last token predicts nothing


def test_model_chat_template_gives_the_default_system_prompt(tmp_path, smollm2):
    record = {"messages": CHAT["messages"][1:3]}
    cfg, train = config(tmp_path, [record], "smollm2-135m", template="auto")
    encoded, _, preprocessor = encode(cfg, train)
    ids, _, _ = row(encoded, 0)
    text = smollm2.decode(ids.tolist(), skip_special_tokens=False)
    assert text.startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face<|im_end|>\n<|im_start|>user\nHi there"
    )
    assert TASK.template(preprocessor, cfg).name == "chatml"


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_truncation_never_empties_a_response_silently(tmp_path, caplog, policy):
    long_prompt = " ".join(["word"] * 80)
    records = [
        {"prompt": "Short question?", "completion": "A fairly long answer " * 6},
        {"prompt": long_prompt, "completion": "Lost."},
    ]
    cfg, train = config(
        tmp_path, records, "tiny-llama", length=32, truncated_response=policy
    )
    with caplog.at_level(logging.WARNING, logger="tfsft"):
        encoded, _, _ = encode(cfg, train)
    assert "1 example(s) lose every response token" in caplog.text
    assert "line 2" in caplog.text and policy in caplog.text
    assert list(encoded.example_index) == ([0] if policy == "drop" else [0, 1])
    # The first example is cut inside its response: the kept part trains, no eos.
    ids, w, targets = row(encoded, 0)
    assert len(ids) == 32 and w[:-1].sum() > 0 and 2 not in targets[w > 0]
    if policy == "keep":
        assert encoded.sample_weight[1].sum() == 0


def test_packing_lays_examples_end_to_end_without_crossing(tmp_path):
    records = [
        {"prompt": f"Question {i}?", "completion": "Answer " * (i + 1)}
        for i in range(6)
    ]
    cfg, train = config(tmp_path, records, "tiny-llama", length=48, packing=True)
    packed, _, _ = encode(cfg, train, packed=True)
    single, _, _ = encode(cfg, train)
    assert packed.rows < single.rows
    seg = np.asarray(packed.features["segment_ids"])
    for r in range(packed.rows):
        n = int(np.asarray(packed.features["padding_mask"])[r].sum())
        s = seg[r, :n]
        assert (np.diff(s) >= 0).all() and s[0] == 1
        ends = np.flatnonzero(np.diff(s))  # last token of each example but the last
        assert (packed.sample_weight[r, ends] == 0).all()
    # Same trained tokens (and weights) as unpacked, only laid out differently.
    assert packed.sample_weight.sum() == single.sample_weight.sum()
    packed_targets = sorted(packed.targets[packed.sample_weight > 0].tolist())
    single_targets = sorted(single.targets[single.sample_weight > 0].tolist())
    assert packed_targets == single_targets


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_packed_rows_compute_each_example_as_if_alone(tmp_path, preset):
    """No attention across a boundary and positions restart: a packed row's
    logits equal each example's logits when run on its own."""
    if preset == "tiny-gpt2" and not GPT2.is_dir():
        pytest.skip("GPT-2 tokenizer not available")
    from tfsft.models.build import build_model

    records = [
        {"prompt": f"Q{i}: what is {i}?", "completion": "yes " * i} for i in (1, 2)
    ]
    cfg, train = config(
        tmp_path, records, preset, length=64, packing=True, template="plain"
    )
    packed, _, _ = encode(cfg, train, packed=True)
    single, _, _ = encode(cfg, train)
    assert packed.rows == 1
    model = build_model(cfg.model, 1, "causal_lm")
    x = {k: v[:1] for k, v in packed.features.items()}
    logits = np.asarray(model(x))[0]
    seg = np.asarray(x["segment_ids"])[0]
    for i in range(2):
        n = int(np.asarray(single.features["padding_mask"])[i].sum())
        alone = {
            k: v[i : i + 1, :n]
            for k, v in single.features.items()
            if k != "segment_ids"
        }
        np.testing.assert_allclose(
            logits[seg == i + 1], np.asarray(model(alone))[0], atol=1e-4
        )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
        ({"instruction": "Do it", "output": ""}, "field 'output': empty"),
        ({"prompt": 3, "completion": "x"}, "field 'prompt': expected a string"),
        ({"foo": "bar"}, "none present"),
    ],
)
def test_bad_records_name_the_record_and_field(tmp_path, record, message):
    cfg, train = config(tmp_path, [CHAT, record], "tiny-llama")
    with pytest.raises(DataError, match="line 2") as err:
        TASK.load_examples(str(train), cfg.data, "train")
    assert message in str(err.value)
