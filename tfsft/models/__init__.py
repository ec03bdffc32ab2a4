"""Model stage: backbones, task heads, freezing and parameter accounting."""
