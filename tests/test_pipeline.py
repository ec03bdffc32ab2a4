import numpy as np
import tensorflow as tf

from tfsft.data.pipeline import make_dataset
from tfsft.data.sources import Examples
from tfsft.models.backbones import load_preprocessor, resolve_preset


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
