"""Text normalisation applied to every example before tokenization."""

from __future__ import annotations

import re
import unicodedata

# Control and format characters (other than ordinary whitespace) come from bad exports
# and copy-paste; tokenizers either drop them or map them to [UNK].
_CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]"
)
_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFC-normalises, removes control characters and collapses whitespace."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
