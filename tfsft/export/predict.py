"""`tfsft predict EXPORT`: predictions from an exported SavedModel, as JSON rows.

The export's raw-text signature does the work (tokenizer, model and decoding in
the graph); its task turns the output tensors into the same JSON as predicting with
the run (`tfsft.tasks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tfsft.data.sources import other_file
from tfsft.errors import TfsftError
from tfsft.export.servables import Servable


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export version dir or a model base dir of them."""
    path = Path(path)
    return (path / "saved_model.pb").is_file() or bool(_versions(path))


def open_export(path: str | Path) -> Servable:
    """Loads a version dir, or the highest version of a model base dir.

    Raises:
        TfsftError: when it is not an export of tfsft.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        path = path / str(max(_versions(path)))
    servable = Servable.load(path)
    if servable.task is None:
        raise TfsftError(
            f"{path}: not a tfsft export (no assets/labels.json and config.yaml); "
            "query it with TF Serving's API instead"
        )
    return servable


def predict_export(
    servable: Servable, texts: list[str], pairs: list[str] | None = None
) -> list[dict[str, Any]]:
    """One JSON row per text, from the export's ``serving_default`` signature."""
    if servable.generation is not None:
        raise TfsftError(
            f"{servable.path}: a causal-LM export generates text: use "
            "`tfsft generate EXPORT --prompt ...`"
        )
    if not texts:
        return []
    inputs: dict[str, Any] = {"text": np.array(texts, dtype=object)}
    if pairs is not None:
        inputs["text_pair"] = np.array(pairs, dtype=object)
    expected = sorted(servable.input_specs("serving_default"))
    if sorted(inputs) != expected:
        raise TfsftError(
            f"{servable.path}: this model takes {', '.join(expected)}; give "
            + ("--text with --text-pair" if "text_pair" in expected else "--text only")
        )
    outputs = servable.run(
        "serving_default", servable.prepare("serving_default", inputs)
    )
    return servable.task.decode_serving(
        inputs, outputs, servable.labels, servable.config.evaluate
    )


def read_export_inputs(
    servable: Servable, path: str | Path
) -> tuple[list[dict[str, Any]], list[str], list[str] | None]:
    """Rows to echo, texts and text pairs of an input file, for an export.

    Pre-tokenized words are joined by spaces: the export takes raw text.
    """
    task, data = servable.task, other_file(servable.config.data)
    examples = task.load_examples(str(path), data, "predict", require_targets=False)
    texts = examples.meta.get("text") or [
        " ".join(t) if isinstance(t, list) else t for t in examples.texts
    ]
    return task.input_rows(examples), list(texts), examples.pairs


def _versions(path: Path) -> list[int]:
    if not path.is_dir():
        return []
    return [
        int(p.name)
        for p in path.iterdir()
        if p.name.isdigit() and (p / "saved_model.pb").is_file()
    ]
