"""Re-wiring keras-hub's layers without forking them.

keras-hub's transformer layers are subclassed layers whose ``call`` reads their
sub-layers from attributes (``self._self_attention_layer._query_dense(x)``), while
the backbone around them is a functional graph whose nodes hold the layer objects
themselves. So there are three ways in, and tfsft uses each where it fits:

- replace an attribute of a subclassed layer with a wrapper that calls the
  original (`replace_sublayer`: LoRA, bottleneck adapters);
- attach a new sub-layer that owns new weights (`attach`: prompt tables, prefixes);
- give one object a subclass of its own class whose method adds a step before or
  after the original (`swap_class`: the graph nodes of a functional backbone call
  ``layer.call``, so only a class-level override reaches them).

Every edit is recorded as an `Edit` that can be undone and redone, so a model can
be saved in its plain keras-hub form (`tfsft.models.peft.detached`).

Keras locks a built layer's tracker (adding state after ``build`` is usually a
bug); these edits happen before compile and unlock it on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras


@dataclass
class Edit:
    """One reversible change to a model."""

    undo: Callable[[], None]
    redo: Callable[[], None]


def sublayers(layer: keras.layers.Layer) -> Iterator[tuple[keras.layers.Layer, str]]:
    """(parent, attribute) of every layer held in an attribute, depth first."""
    for name, value in list(vars(layer).items()):
        if isinstance(value, keras.layers.Layer) and not name.startswith("_tfsft"):
            yield layer, name
            yield from sublayers(value)


def _set_tracked(parent: keras.layers.Layer, name: str, value: object) -> None:
    tracker = getattr(parent, "_tracker", None)
    locked = bool(tracker and tracker.locked)
    if locked:
        tracker.unlock()
    try:
        setattr(parent, name, value)
    finally:
        if locked:
            tracker.lock()


def _untrack(parent: keras.layers.Layer, layer: keras.layers.Layer) -> None:
    tracker = getattr(parent, "_tracker", None)
    if tracker is not None:  # drops it from parent._layers and the seen ids
        tracker.untrack(layer)


def replace_sublayer(
    parent: keras.layers.Layer, name: str, new: keras.layers.Layer
) -> Edit:
    """Puts ``new`` where ``parent.<name>`` was (``new`` usually wraps the old one)."""
    old = getattr(parent, name)

    def swap(out: keras.layers.Layer, into: keras.layers.Layer) -> None:
        _untrack(parent, out)
        _set_tracked(parent, name, into)

    swap(old, new)
    return Edit(undo=lambda: swap(new, old), redo=lambda: swap(old, new))


def attach(parent: keras.layers.Layer, name: str, new: keras.layers.Layer) -> Edit:
    """Adds ``new`` (and its weights) to ``parent`` as ``parent.<name>``."""

    def add() -> None:
        _set_tracked(parent, name, new)

    def remove() -> None:
        _untrack(parent, new)
        object.__delattr__(parent, name)

    add()
    return Edit(undo=remove, redo=add)


def swap_class(obj: object, mixin: type) -> Edit:
    """Makes ``obj`` an instance of ``mixin`` + its class (the mixin's methods call
    ``super()`` for the original behaviour)."""
    original = type(obj)
    swapped = type(f"{mixin.__name__}{original.__name__}", (mixin, original), {})

    def set_class(cls: type) -> None:
        object.__setattr__(obj, "__class__", cls)

    set_class(swapped)
    return Edit(undo=lambda: set_class(original), redo=lambda: set_class(swapped))


def set_method(obj: object, name: str, method: Callable) -> Edit:
    """Overrides one method of one object (not of its class)."""

    def set_() -> None:
        object.__setattr__(obj, name, method)

    def unset() -> None:
        obj.__dict__.pop(name, None)

    set_()
    return Edit(undo=unset, redo=set_)
