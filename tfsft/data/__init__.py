"""Data stage: read, validate, clean, split and turn examples into tf.data pipelines."""
