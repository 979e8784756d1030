"""Checks on text before it reaches the encoder, shared by bulk scoring and the service."""

from __future__ import annotations


def unencodable_at(text: str) -> int | None:
    """The index of the first character UTF-8 cannot encode (a lone surrogate, as JSON's
    "\\ud83d" escape gives), or None. Tokenizers and HTTP clients fail on such text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None
