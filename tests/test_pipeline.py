import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfsft.data.encoded import Encoded, token_lengths
from tfsft.data.pipeline import bucket_widths
from tfsft.data.pipeline import make_dataset as make_encoded_dataset
from tfsft.data.sources import Examples
from tfsft.data.tokenize import tokenize_all
from tfsft.models.backbones import load_preprocessor, resolve_preset


def make_dataset(examples, labels, preprocessor, batch_size, **kwargs):
    """Encodes texts (and labels) as a classification task does, then batches."""
    tokens = tokenize_all(examples, preprocessor)
    encoded = Encoded(tokens, np.arange(len(examples)), labels)
    return make_encoded_dataset(encoded, batch_size, **kwargs)


def _encoded(tokens, labels):
    return Encoded(tokens, np.arange(len(tokens["token_ids"])), labels)


def _examples(n, pairs=False):
    texts = [f"the film was good number {i}" for i in range(n)]
    return Examples(
        source="mem",
        texts=texts,
        labels=list(range(n)),
        rows=list(range(1, n + 1)),
        pairs=[f"second {i}" for i in range(n)] if pairs else None,
    )


def test_batches_have_int32_masks_static_length_and_known_size():
    pre = load_preprocessor(resolve_preset("tiny"), 24)
    ex = _examples(37)
    ds = make_dataset(ex, np.arange(37, dtype=np.int32), pre, 8, shuffle=True, seed=3)
    assert int(ds.cardinality()) == 5
    x, y = next(iter(ds))
    assert set(x) == {"token_ids", "segment_ids", "padding_mask"}
    assert x["padding_mask"].dtype == tf.int32  # bool breaks MirroredStrategy
    assert x["token_ids"].shape == (8, 24)
    assert y.shape == (8,)


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    pre = load_preprocessor(resolve_preset("tiny"), 16)
    ex = _examples(40)
    labels = np.arange(40, dtype=np.int32)

    def epochs(seed):
        ds = make_dataset(ex, labels, pre, 40, shuffle=True, seed=seed)
        return [next(iter(ds))[1].numpy().tolist() for _ in range(2)]

    first, second = epochs(7)
    assert sorted(first) == list(range(40)) and first != second
    assert epochs(7) == [first, second]


def test_pairs_get_two_segments_and_prediction_has_no_labels():
    pre = load_preprocessor(resolve_preset("tiny"), 32)
    ds = make_dataset(_examples(3, pairs=True), None, pre, 3)
    x = next(iter(ds))
    assert isinstance(x, dict)
    segments = x["segment_ids"].numpy()
    mask = x["padding_mask"].numpy().astype(bool)
    assert set(np.unique(segments[mask])) == {0, 1}


@pytest.mark.parametrize("group", [1, 4])
def test_length_buckets_cover_every_example_once_with_minimal_width(group):
    from tfsft.data.pipeline import bucket_widths, epoch_orders, plan_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 49, size=203)  # already truncated to 48
    widths = bucket_widths([16, 32, 64, 128], 48)
    assert widths == [16, 32, 48]
    batches, sizes = plan_batches(lengths, 8, 2, 5, widths, 48, group)
    assert len(batches) == 2 * 26  # ceil(203 / 8) steps per epoch, as without buckets
    for epoch in range(2):
        seen = np.concatenate(batches[epoch * 26 : (epoch + 1) * 26])
        assert sorted(seen.tolist()) == list(range(203))
    for batch, width in zip(batches, sizes, strict=True):
        longest = lengths[batch].max()
        assert width == min(w for w in widths if w >= longest)
    padded = sum(len(b) * w for b, w in zip(batches, sizes, strict=True))
    if group == 1:  # random batches: the plain shuffled order, only trimmed
        order = epoch_orders(203, 2, 5).ravel()
        assert np.array_equal(np.concatenate(batches), order)
        assert padded < 2 * 203 * 48
    else:  # grouping by length pads far less than padding everything to 48
        assert padded < 0.8 * 2 * 203 * 48
        for epoch in range(2):  # a batch is a length slice of one window of 32
            window_of = np.empty(203, int)
            window_of[epoch_orders(203, 2, 5)[epoch]] = np.arange(203) // 32
            epoch_batches = batches[epoch * 26 : (epoch + 1) * 26]
            assert all(len(set(window_of[b])) == 1 for b in epoch_batches)
            for w in range(7):
                members = [b for b in epoch_batches if window_of[b[0]] == w]
                members.sort(key=lambda b: lengths[b].min())
                for a, c in itertools.pairwise(members):
                    assert lengths[a].max() <= lengths[c].min()
    again = plan_batches(lengths, 8, 2, 5, widths, 48, group)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again[0], strict=True))
    other = plan_batches(lengths, 8, 2, 6, widths, 48, group)[0]
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))


def test_auto_buckets_are_eight_widths_in_multiples_of_eight():
    from tfsft.data.pipeline import bucket_widths

    assert bucket_widths("auto", 64) == list(range(8, 65))
    assert bucket_widths("auto", 512) == list(range(8, 513, 8))
    assert bucket_widths("auto", 100) == [*range(8, 100, 2), 100]
    # XLA compiles once per shape: eight widths.
    assert bucket_widths("auto", 64, compiled=True) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert bucket_widths("auto", 128, compiled=True) == list(range(16, 129, 16))
    assert bucket_widths("auto", 100, compiled=True) == [16, 32, 48, 64, 80, 96, 100]
    assert bucket_widths(None, 64) is None


def test_train_and_eval_datasets_trim_padding_to_the_bucket():
    from tfsft.data.pipeline import gather_slices, make_eval_dataset, plan_batches

    pre = load_preprocessor(resolve_preset("tiny"), 64)
    ex = _examples(20)
    tokens = tokenize_all(ex, pre)
    assert tokens["token_ids"].shape == (20, 64)
    lengths = token_lengths(tokens)
    batches, sizes = plan_batches(lengths, 4, 1, 0, [16, 32, 64], 64)
    ds = gather_slices(_encoded(tokens, np.arange(20, dtype=np.int32)), batches, sizes)
    for (x, y), batch, size in zip(ds, batches, sizes, strict=True):
        assert y.numpy().tolist() == batch.tolist()  # the planned rows, in order
        assert x["token_ids"].shape == (4, size) and size >= lengths[batch].max()
    assert set(sizes) <= {16, 32} and 64 not in sizes  # these texts fit in 16 or 32
    eval_ds, order = make_eval_dataset(_encoded(tokens, None), 8, [16, 32, 64])
    assert sorted(order.tolist()) == list(range(20))
    assert all(x["padding_mask"].dtype == tf.int32 for x in eval_ds)


def test_make_dataset_under_fit_feeds_the_trainers_plan_epoch_by_epoch():
    """A script's model.fit(make_dataset(...)) sees the batches train() plans."""
    import keras

    from tfsft.data.pipeline import plan_epoch

    pre = load_preprocessor(resolve_preset("tiny"), 32)
    ex = _examples(37)
    tokens = tokenize_all(ex, pre)
    rows = np.arange(37, dtype=np.float32)
    ds = make_encoded_dataset(
        _encoded(tokens, rows),
        8,
        shuffle=True,
        seed=3,
        length_buckets="auto",
        length_grouping=2,
    )
    seen = []

    def spy(x, y):
        tf.py_function(lambda v: seen.append(v.numpy().astype(int).tolist()), [y], [])
        return x, y

    inputs = {k: keras.Input((None,), dtype="int32", name=k) for k in tokens}
    mask = keras.ops.cast(inputs["padding_mask"], "float32")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.ops.sum(mask, 1, True)))
    model.compile("sgd", "mse")
    model.fit(ds.map(spy), epochs=3, verbose=0)
    lengths = token_lengths(tokens)
    for epoch in range(3):
        plan, _ = plan_epoch(lengths, 8, 3, epoch, bucket_widths("auto", 32), 32, 2)
        assert seen[epoch * 5 : (epoch + 1) * 5] == [b.tolist() for b in plan]


def test_no_code_outside_the_tasks_branches_on_the_task_name():
    import re

    from conftest import REPO

    pattern = re.compile(r"task *(==|!=|in *[(\[{])")
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "tfsft").rglob("*.py"))
        if "tasks" not in path.relative_to(REPO / "tfsft").parts[:1]
        and path.name != "config.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
