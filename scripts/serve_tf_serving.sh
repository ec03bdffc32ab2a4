#!/usr/bin/env bash
# Serve an export with the real TF Serving (documented; not run in CI: it needs Docker
# and the tensorflow/serving image). The folder layout is the same one `tfsft serve`
# reads: saved_models/NAME/<version>/.
#
#   scripts/serve_tf_serving.sh saved_models/quickstart
#
# The raw-text signature uses tensorflow-text ops (see `tfsft export --check`); use a
# TF Serving build that includes them, or export with --tokens-only for a model that
# any build loads (clients then tokenize with assets/vocab.txt).
set -euo pipefail
model_dir=$(cd "${1:?usage: $0 saved_models/NAME}" && pwd)
name=$(basename "$model_dir")
exec docker run --rm -p 8500:8500 -p 8501:8501 \
  --mount "type=bind,source=$model_dir,target=/models/$name" \
  -e MODEL_NAME="$name" -t tensorflow/serving
