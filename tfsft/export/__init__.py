"""Export stage: SavedModels for TF Serving, their checks, and a local server."""
