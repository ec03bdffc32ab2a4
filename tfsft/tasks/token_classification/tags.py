"""Tag schemes: parsing tags, detecting the scheme, legality, repair, conversion.

Tags are ``O`` or ``P-TYPE`` with the prefix P one of:

- IOB2 (CoNLL-2003 as distributed here, HF datasets): B begins every entity, I
  continues it;
- IOB1 (the original CoNLL-2003 files): I begins an entity, B only one that directly
  follows an entity of the same type;
- BIOES: B begins, I continues, E ends a multi-word entity, S is a one-word entity.

IOB1 data is converted to IOB2 when read (the entities are the same), so a model's
label space is IOB2 or BIOES. Pure Python: used while reading, before TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEMES = ("iob1", "iob2", "bioes")
# Prefixes a scheme allows; "auto" accepts any until the scheme is detected.
ALLOWED = {"iob1": "BI", "iob2": "BI", "bioes": "BIES", "auto": "BIES"}
Span = tuple[int, int, str]  # [start, end) word positions and the entity type


def split_tag(tag: str) -> tuple[str, str]:
    """("O", "") or (prefix, type), e.g. ("B", "PER") for "B-PER".

    Raises:
        ValueError: for anything else.
    """
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not kind.strip():
        raise ValueError(tag)
    return prefix, kind


def tag_problem(tag: object, scheme: str) -> str | None:
    """Why ``tag`` cannot be a tag of ``scheme`` (or "auto"), or None if it can."""
    allowed = ALLOWED[scheme]
    shown = ", ".join(f"{p}-TYPE" for p in allowed)
    name = "any scheme" if scheme == "auto" else scheme.upper()
    if not isinstance(tag, str):
        return f"tag {tag!r} is not text"
    try:
        prefix, _ = split_tag(tag)
    except ValueError:
        return f"tag {tag!r} is outside {name} (O, {shown})"
    if prefix != "O" and prefix not in allowed:
        return f"tag {tag!r} is outside {name} (O, {shown})"
    return None


def detect_scheme(sequences: Sequence[Sequence[str]]) -> str:
    """iob2, iob1 or bioes, from how the tags of ``sequences`` are used.

    E- or S- tags mean BIOES. A B- tag that begins an entity (after O or another
    type) means IOB2, since IOB1 uses B only between two entities of one type; an I-
    tag that begins one, and no such B, means IOB1. Data with no entities is IOB2.
    """
    begins_with_b = begins_with_i = False
    for tags in sequences:
        previous = ("O", "")
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix in ("E", "S"):
                return "bioes"
            starts = previous[0] == "O" or previous[1] != kind
            begins_with_b |= prefix == "B" and starts
            begins_with_i |= prefix == "I" and starts
            previous = (prefix, kind)
    return "iob1" if begins_with_i and not begins_with_b else "iob2"


def lenient_spans(tags: Sequence[str]) -> list[Span]:
    """The entities a reader would see in ``tags`` of any scheme, even ill-formed.

    An entity begins at B- or S-, or at I-/E- that does not continue an open entity of
    its type; E- and S- close it. This is what `repair` keeps; the metrics use
    seqeval's strict reading instead.
    """
    spans: list[Span] = []
    start, kind, open_ = 0, "", False
    for i, tag in enumerate(tags):
        prefix, t = split_tag(tag)
        continues = open_ and prefix in ("I", "E") and t == kind
        if not continues:
            if open_:
                spans.append((start, i, kind))
            open_ = prefix != "O"
            start, kind = i, t
        if prefix in ("E", "S") and open_:
            spans.append((start, i + 1, kind))
            open_ = False
    if open_:
        spans.append((start, len(tags), kind))
    return spans


def encode_spans(spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    """The tags of ``length`` words with ``spans`` as entities, in ``scheme``."""
    tags = ["O"] * length
    previous_end, previous_kind = -1, ""
    for start, end, kind in spans:
        if scheme == "bioes" and end - start == 1:
            tags[start] = f"S-{kind}"
        else:
            first = "B"
            if scheme == "iob1":
                adjacent = start == previous_end and kind == previous_kind
                first = "B" if adjacent else "I"
            tags[start] = f"{first}-{kind}"
            for i in range(start + 1, end):
                tags[i] = f"I-{kind}"
            if scheme == "bioes":
                tags[end - 1] = f"E-{kind}"
        previous_end, previous_kind = end, kind
    return tags


def repair(tags: Sequence[str], scheme: str) -> list[str]:
    """``tags`` rewritten as legal ``scheme`` tags with the same lenient entities:
    an I-X after O becomes B-X (IOB2), a B-X not closed becomes S-X or ends in E-X
    (BIOES), and so on. Legal tags come back unchanged."""
    return encode_spans(lenient_spans(tags), len(tags), scheme)


def entity_types(names: Sequence[str]) -> list[str]:
    """The entity types of a label space, sorted (PER, ORG, ...)."""
    return sorted({split_tag(n)[1] for n in names} - {""})


def label_names(types: Sequence[str], scheme: str) -> list[str]:
    """Every tag of ``scheme`` for ``types``: O first, then by type, prefix order."""
    prefixes = "BIES" if scheme == "bioes" else "BI"
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in prefixes]


# Tag prefixes as the exported graph's span decoder numbers them.
PREFIX_IDS = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4}


def tag_tables(names: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """(prefix id per tag, type id per tag (-1 for O), the type names)."""
    types = entity_types(names)
    prefixes, kinds = [], []
    for name in names:
        prefix, kind = split_tag(name)
        prefixes.append(PREFIX_IDS[prefix])
        kinds.append(types.index(kind) if kind else -1)
    return prefixes, kinds, types
