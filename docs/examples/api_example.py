"""Fine-tune with tfsft's Python API, driving the Keras objects yourself.

tfsft does the parts that differ between tasks (reading and validating the data,
labels, tokenization, the head, the loss); the loop is plain Keras: ``model.fit``,
``model.evaluate``, ``model.predict``. Run it from the repository root:

    python docs/examples/api_example.py                 # the real MiniLM, one epoch
    python docs/examples/api_example.py --preset tiny   # a random tiny BERT, seconds

`tfsft.train(cfg)` does all of this in one call (plus resume, checkpoints and the
run dir with its report); see docs/python-api.md.
"""

from __future__ import annotations

import argparse

import numpy as np

import tfsft


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--preset", help="model.preset, e.g. tiny (default: config's)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)

    # 1. The config: strict, validated once; overrides as on the command line.
    overrides = [f"train.epochs={args.epochs}"]
    if args.preset:
        overrides.append(f"model.preset={args.preset}")
    cfg = tfsft.load_config(args.config, overrides)

    import keras  # after tfsft: it sets KERAS_BACKEND=tensorflow

    keras.utils.set_random_seed(cfg.train.seed)

    # 2. The task object knows the fields, labels, encoding, head and loss.
    task = tfsft.get_task(cfg)
    splits = tfsft.load_splits(cfg)  # train / validation / test, validated rows
    labels = task.build_labels(splits.train, cfg.data)
    preprocessor = task.load_preprocessor(
        tfsft.resolve_preset(cfg.model.preset), cfg.model.sequence_length
    )
    train = task.encode(splits.train, preprocessor, labels, cfg)
    validation = task.encode(splits.validation, preprocessor, labels, cfg)
    print(f"labels {labels.names}; {train.rows} train / {validation.rows} validation")

    # 3. tf.data batches as `tfsft train` plans them: seeded order, length buckets,
    #    length grouping; each iteration of the dataset is the next epoch.
    train_ds = tfsft.make_dataset(
        train,
        cfg.train.batch_size,
        shuffle=True,
        seed=cfg.train.seed,
        length_buckets=cfg.data.length_buckets,
        length_grouping=cfg.data.length_grouping,
    )
    validation_ds = tfsft.make_dataset(
        validation, cfg.train.batch_size, length_buckets=cfg.data.length_buckets
    )

    # 4. A plain keras.Model (keras-hub backbone + the task's head), compiled with
    #    the task's loss and metrics and tfsft's AdamW schedule.
    model = tfsft.build_model(cfg.model, labels, cfg.task)
    trainable, total = tfsft.count_params(model)
    print(f"trainable parameters: {trainable:,} of {total:,}")
    tfsft.compile_model(model, cfg, total_steps=len(train_ds) * cfg.train.epochs)

    # 5. Plain Keras from here on.
    history = model.fit(
        train_ds, validation_data=validation_ds, epochs=cfg.train.epochs, verbose=2
    )
    print("history:", {k: [round(v, 4) for v in h] for k, h in history.history.items()})
    print("evaluate:", model.evaluate(validation_ds, verbose=0, return_dict=True))

    # 6. Predict raw texts: encode them as the task does, then model.predict.
    texts = ["An absolute joy from start to finish.", "The battery died in two days."]
    examples = task.input_examples(texts, None, cfg, where="api_example")
    encoded = task.encode(examples, preprocessor, None, cfg)
    logits = model.predict(tfsft.make_dataset(encoded, cfg.train.batch_size), verbose=0)
    outputs = task.outputs(np.asarray(logits), encoded)  # probabilities per example
    rows = task.decode(outputs, examples, labels, cfg.evaluate)
    for text, row in zip(texts, rows, strict=True):
        print(text, "->", row)


if __name__ == "__main__":
    main()
