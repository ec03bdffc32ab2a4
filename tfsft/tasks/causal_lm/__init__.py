"""``task: causal_lm``: instruction and chat SFT (and plain-text continued
pre-training) of a decoder.

Records (`tfsft.data.chat`) are rendered with a template into segments with loss
weights, tokenized segment by segment (`encoding`), and trained with a
token-weighted cross-entropy: by default only the responses and the end token of
every assistant turn count. Validation reports the response-only loss, its
perplexity and the token accuracy, from one prediction pass per epoch in which the
per-token log-probabilities are taken in the graph (the [rows, length, vocab]
logits never reach the host). A callback writes greedy generations for a few fixed
validation prompts after every epoch (`samples`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfsft.config import DataConfig, EvaluateConfig, ExperimentConfig, ModelConfig
from tfsft.data.chat import Template, Turn, record_turns, resolve_template
from tfsft.data.encoded import Encoded
from tfsft.data.labels import LabelSpec
from tfsft.data.readers import RowProblem
from tfsft.data.sources import Examples, Row, read_examples
from tfsft.errors import TfsftError
from tfsft.runs import write_json
from tfsft.tasks.base import Task
from tfsft.tasks.causal_lm.encoding import (
    keep_after_truncation,
    pack,
    shifted_rows,
    tokenize_conversations,
)
from tfsft.tasks.causal_lm.metrics import response_metrics

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("tfsft")
TEMPLATE_FILE = "template.json"  # the resolved template, beside the saved model


class CausalLM(Task):
    name = "causal_lm"
    metric_modes: ClassVar[dict[str, str]] = {
        "loss": "min",
        "perplexity": "min",
        "token_accuracy": "max",
    }
    default_monitor = "val_loss"
    epoch_metric_names = ("loss", "perplexity", "token_accuracy")

    # --- data -------------------------------------------------------------------
    def load_examples(
        self, spec: str, cfg: DataConfig, split: str, require_targets: bool = True
    ) -> Examples:
        """Chat, alpaca, prompt/completion or plain-text records; ``texts`` holds
        each record's turns."""

        def accept(row: int, record: dict[str, Any]) -> Row | RowProblem:
            turns = record_turns(record)
            if isinstance(turns, str):
                field, _, message = turns.partition(": ")
                return RowProblem(row, field.removeprefix("field ").strip("'"), message)
            return Row(turns)

        return read_examples(spec, cfg, split, [], accept)

    def build_labels(self, train: Examples, cfg: DataConfig) -> LabelSpec:
        return LabelSpec(self.name)

    def load_preprocessor(self, preset: str, sequence_length: int) -> Any:
        from tfsft.tasks.causal_lm.model import load_causal_preprocessor

        preprocessor = load_causal_preprocessor(preset, sequence_length)
        preprocessor.tfsft_model_dir = preset  # where the model's chat template is
        return preprocessor

    def template(self, preprocessor: Any, cfg: ExperimentConfig) -> Template:
        """The run's template: saved with the model, or resolved from the config
        (and the model's own chat template) once."""
        found = getattr(preprocessor, "tfsft_template", None)
        if found is None:
            found = resolve_template(
                cfg.data.template,
                cfg.data.system_prompt,
                preprocessor.tokenizer,
                getattr(preprocessor, "tfsft_model_dir", None),
            )
            preprocessor.tfsft_template = found
        return found

    def encode(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec | None,
        cfg: ExperimentConfig,
    ) -> Encoded:
        return self._encode(examples, preprocessor, labels, cfg, packed=False)

    def encode_train(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec,
        cfg: ExperimentConfig,
    ) -> Encoded:
        """The training split, packed when ``data.packing`` says so."""
        return self._encode(examples, preprocessor, labels, cfg, cfg.data.packing)

    def _encode(
        self,
        examples: Examples,
        preprocessor: Any,
        labels: LabelSpec | None,
        cfg: ExperimentConfig,
        packed: bool,
    ) -> Encoded:
        template = self.template(preprocessor, cfg)
        tokenizer = preprocessor.tokenizer
        width = cfg.model.sequence_length
        conversations = examples.texts
        tok = tokenize_conversations(
            conversations, template, tokenizer, width, cfg.data.train_on_prompt
        )
        keep = np.arange(len(examples))
        if tok.emptied:
            keep = keep_after_truncation(
                examples, tok.emptied, cfg.data.truncated_response
            )
        ids = [tok.ids[i] for i in keep]
        weights = [tok.weights[i] for i in keep]
        pad = _pad_id(tokenizer)
        if packed:
            ids, weights, segments, rows = pack(ids, weights, width)
            arrays = shifted_rows(ids, weights, width, pad, segments)
            index = np.array([keep[r[0]] for r in rows])
        else:
            arrays = shifted_rows(ids, weights, width, pad)
            index = keep
        import tensorflow as tf

        features = {
            k: tf.constant(arrays[k])
            for k in ("token_ids", "padding_mask", "segment_ids")
            if k in arrays
        }
        return Encoded(
            features=features,
            example_index=np.asarray(index, np.int64),
            targets=arrays["targets"] if labels is not None else None,
            sample_weight=arrays["sample_weight"] if labels is not None else None,
            token_level=True,
        )

    def token_counts(
        self, examples: Examples, preprocessor: Any, cfg: ExperimentConfig
    ) -> np.ndarray:
        template = self.template(preprocessor, cfg)
        tok = tokenize_conversations(
            examples.texts, template, preprocessor.tokenizer, 10**9, False
        )
        return np.array([len(i) for i in tok.ids])

    def describe_targets(
        self, examples: Examples, labels: LabelSpec, cfg: DataConfig
    ) -> str:
        turns = [t for turns in examples.texts for t in turns]
        replies = sum(t.role == "assistant" for t in turns)
        texts = sum(t.role == "text" for t in turns)
        plain = f", {texts} plain texts" if texts else ""
        return f"{replies} assistant turns{plain}"

    # --- model ------------------------------------------------------------------
    def build_model(
        self, backbone: keras.Model, cfg: ModelConfig, labels: LabelSpec, preset: str
    ) -> keras.Model:
        from tfsft.tasks.causal_lm.model import build_causal_lm

        return build_causal_lm(backbone, cfg.dropout)

    def load_model(self, preset_dir: Path, dtype: str | None) -> keras.Model:
        from tfsft.tasks.causal_lm.model import load_causal_lm

        model = load_causal_lm(preset_dir, dtype)
        template_file = preset_dir / TEMPLATE_FILE
        if template_file.is_file() and model.preprocessor is not None:
            model.preprocessor.tfsft_template = Template.from_json(
                template_file.read_text()
            )
        return model

    def save_extras(self, model_dir: Path, preprocessor: Any) -> None:
        template = getattr(preprocessor, "tfsft_template", None)
        if template is not None:
            (model_dir / TEMPLATE_FILE).write_text(template.to_json())

    def callbacks(
        self, run_dir: Path, cfg: ExperimentConfig, preprocessor: Any, validation: Any
    ) -> list[keras.callbacks.Callback]:
        from tfsft.tasks.causal_lm.samples import GenerationSamples

        n = cfg.generate.samples_per_epoch
        if validation is None or n == 0:
            return []
        template = self.template(preprocessor, cfg)
        return [
            GenerationSamples(
                run_dir,
                validation.texts[:n],
                template,
                preprocessor.tokenizer,
                self.stop_ids(preprocessor, cfg),
                cfg.generate.max_new_tokens,
            )
        ]

    def stop_ids(self, preprocessor: Any, cfg: ExperimentConfig) -> list[int]:
        """Generation stops at the template's eos (the end of an assistant turn)."""
        eos = self.template(preprocessor, cfg).eos
        return [int(preprocessor.tokenizer.token_to_id(eos))]

    def describe_head(self, model: keras.Model) -> str:
        return f"keras-hub's {type(model).__name__} (the tied token embedding)"

    def loss(self) -> keras.losses.Loss:
        import keras

        # Divided by the batch's total token weight: the mean over trained tokens
        # (HF's convention), whatever the padding.
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        )

    def weighted_metrics(self) -> list[keras.metrics.Metric]:
        import keras

        return [keras.metrics.SparseCategoricalAccuracy(name="token_accuracy")]

    # --- outputs ------------------------------------------------------------------
    def token_outputs(self, model: keras.Model, x: dict[str, tf.Tensor]) -> tf.Tensor:
        """[rows, width, 2] float32: log p(next token) and whether it was the top
        prediction, at every position (in the graph, batch by batch).

        The LM head runs one row at a time: a batch's [rows, width, vocab] float32
        logits (8 x 512 x 49,152: 0.8 GB, and as much again for the softmax) would
        be the largest allocation of a LoRA run."""
        import tensorflow as tf

        backbone = getattr(model, "causal_lm", model).backbone
        hidden = backbone(
            {k: x[k] for k in ("token_ids", "padding_mask")}, training=False
        )
        ids = x["token_ids"]
        targets = tf.concat([ids[:, 1:], tf.zeros_like(ids[:, :1])], axis=1)

        def row(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            states, target = args
            logits = tf.cast(backbone.token_embedding(states, reverse=True), tf.float32)
            picked = tf.gather(logits, target[:, None], batch_dims=1)[:, 0]
            logp = picked - tf.reduce_logsumexp(logits, axis=-1)
            top = tf.argmax(logits, -1, output_type=target.dtype) == target
            return tf.stack([logp, tf.cast(top, tf.float32)], axis=-1)

        return tf.map_fn(row, (hidden, targets), fn_output_signature=tf.float32)

    def outputs(self, logits: np.ndarray, encoded: Encoded) -> np.ndarray:
        return logits  # already reduced to [rows, width, 2]

    def epoch_metrics(
        self, outputs: Any, encoded: Encoded, labels: LabelSpec
    ) -> dict[str, float]:
        return response_metrics(outputs, encoded.sample_weight)

    def write_report(
        self,
        out_dir: Path,
        examples: Examples,
        encoded: Encoded,
        outputs: Any,
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> dict[str, float | None]:
        metrics: dict[str, float | None] = response_metrics(
            outputs, encoded.sample_weight
        )
        metrics["examples"] = len(examples)
        metrics["response_tokens"] = float((encoded.sample_weight > 0).sum())
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "metrics.json", metrics)
        return metrics

    def check_predict(self, where: str) -> None:
        raise TfsftError(
            f"{where}: a causal_lm run generates text: use "
            "`tfsft generate RUN --prompt ...` (or --input FILE)"
        )

    def decode(
        self, outputs: Any, examples: Examples, labels: LabelSpec, cfg: EvaluateConfig
    ) -> list[dict[str, Any]]:
        self.check_predict("decode")
        return []

    def input_examples(
        self,
        texts: list[str],
        pairs: list[str] | None,
        cfg: ExperimentConfig,
        where: str = "<input>",
    ) -> Examples:
        return Examples(
            source=where,
            texts=[[Turn("user", t)] for t in texts],
            labels=[None] * len(texts),
            rows=list(range(1, len(texts) + 1)),
            row_kind="prompt",
        )

    def input_rows(self, examples: Examples) -> list[dict[str, Any]]:
        return [
            {"line": r, "prompt": _last_user_text(t)}
            for r, t in zip(examples.rows, examples.texts, strict=True)
        ]

    def serving_usage(self, cfg: ExperimentConfig) -> str:
        from tfsft.tasks.causal_lm.serving import USAGE

        return USAGE

    def serving_signatures(
        self,
        model: keras.Model,
        preprocessor: Any,
        labels: LabelSpec,
        cfg: ExperimentConfig,
        with_text: bool,
    ) -> dict[str, Any]:
        """Generation in the graph (`serving`): ``serving_default`` (prompt in,
        greedy completion out), ``generate_text``, ``count_tokens``, and
        ``serve_tokens``."""
        from tfsft.tasks.causal_lm.serving import signatures

        template = self.template(preprocessor, cfg)
        stops = self.stop_ids(preprocessor, cfg)
        # A freshly trained model is keras-hub's inside an SFTCausalLM.
        model = getattr(model, "causal_lm", model)
        return signatures(model, preprocessor, template, stops, with_text)

    def serving_assets(
        self, model: keras.Model, preprocessor: Any, cfg: ExperimentConfig
    ) -> dict[str, str]:
        """``template.json`` and ``generation.json`` (defaults, context, eos), so
        an export renders prompts without the run."""
        import json

        from tfsft.tasks.causal_lm.generation import context_length

        template = self.template(preprocessor, cfg)
        defaults = cfg.generate.model_dump(exclude={"samples_per_epoch"})
        defaults |= {"context_length": context_length(model), "eos": template.eos}
        return {
            TEMPLATE_FILE: template.to_json(),
            "generation.json": json.dumps(defaults, indent=2),
        }

    def decode_serving(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        labels: LabelSpec,
        cfg: EvaluateConfig,
    ) -> list[dict[str, Any]]:
        return [
            {"completion": c.decode("utf-8") if isinstance(c, bytes) else str(c)}
            for c in np.asarray(outputs["completion"]).tolist()
        ]


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _last_user_text(turns: list[Turn]) -> str:
    users = [t.text for t in turns if t.role in ("user", "text")]
    return users[-1] if users else ""


TASK = CausalLM()
