"""The tasks by ``task:`` name: the module that defines each (its ``TASK``).

A plain dict, importable without TensorFlow: the config takes its ``task:`` choices
from it.
"""

TASKS: dict[str, str] = {
    "classification": "tfsft.tasks.classification",
    "multilabel": "tfsft.tasks.multilabel",
    "regression": "tfsft.tasks.regression",
    "token_classification": "tfsft.tasks.token_classification",
    "causal_lm": "tfsft.tasks.causal_lm",
}
