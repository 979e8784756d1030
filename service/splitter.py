"""Split a long document into passages on paragraph and sentence boundaries so that no
passage overflows the encoder's token window; neighbours overlap by one short sentence.

Passages are [start, end) character spans of the original text, so offsets are exact."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

PARAGRAPH = re.compile(r"\n[ \t]*\n")
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]”’]*\s+")


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def approx_tokens(text: str) -> int:
    """Word-piece count estimate: one per word or mark, more for long words."""
    return sum(1 + len(p) // 10 for p in re.findall(r"\w+|[^\w\s]", text))


def _units(text: str, budget: int, count: Callable[[str], int]) -> list[tuple[Span, bool]]:
    """Sentences (and over-long sentences cut by words); flag marks a paragraph's end."""
    units: list[tuple[Span, bool]] = []
    para_starts = [0] + [m.end() for m in PARAGRAPH.finditer(text)]
    para_ends = [m.start() for m in PARAGRAPH.finditer(text)] + [len(text)]
    for p_start, p_end in zip(para_starts, para_ends):
        cuts = [p_start] + [p_start + m.end() for m in SENTENCE_END.finditer(text[p_start:p_end])]
        cuts.append(p_end)
        sentences = [Span(a, b) for a, b in zip(cuts, cuts[1:]) if text[a:b].strip()]
        for k, sentence in enumerate(sentences):
            pieces = [sentence]
            if count(text[sentence.start:sentence.end]) > budget:
                pieces = _cut_by_words(text, sentence, budget, count)
            for i, piece in enumerate(pieces):
                last = k == len(sentences) - 1 and i == len(pieces) - 1
                units.append((piece, last))
    return units


def _cut_by_words(text: str, span: Span, budget: int, count) -> list[Span]:
    """Cut an over-long sentence at word boundaries; word counts are added up (near-additive)
    so the cost stays linear in the sentence's length."""
    pieces: list[Span] = []
    start = end = None
    used = 0
    for m in re.finditer(r"\S+", text[span.start:span.end]):
        a, b = span.start + m.start(), span.start + m.end()
        size = count(text[a:b])
        if size > budget:  # one giant run of characters: cut it by length
            if start is not None:
                pieces.append(Span(start, end))
                start, used = None, 0
            pieces.extend(_cut_by_length(text, a, b, budget, count))
            continue
        if start is not None and used + size <= budget:
            end, used = b, used + size
        else:
            if start is not None:
                pieces.append(Span(start, end))
            start, end, used = a, b, size
    if start is not None:
        pieces.append(Span(start, end))
    return pieces


def _cut_by_length(text: str, a: int, b: int, budget: int, count) -> list[Span]:
    pieces, pos = [], a
    while pos < b:
        lo, hi = pos + 1, min(b, pos + budget * 16)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            if count(text[pos:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(Span(pos, lo))
        pos = lo
    return pieces


def split_passages(text: str, max_tokens: int = 240,
                   count: Callable[[str], int] = approx_tokens,
                   overlap: bool = True) -> list[Span]:
    """Pack sentences greedily into passages of at most max_tokens; prefer to end a passage
    at a paragraph end once it is half full. A short last sentence is repeated as overlap."""
    if not text.strip():
        return []
    # a word piece spans at least one character, so long texts skip the whole-text count
    if len(text) <= max_tokens * 12 and count(text) <= max_tokens:
        return [Span(0, len(text))]
    units = _units(text, max_tokens, count)
    sizes = [count(text[u.start:u.end]) for u, _ in units]  # near-additive; counted once
    spans: list[Span] = []
    i = 0
    while i < len(units):
        j, used = i, sizes[i]
        while j + 1 < len(units) and used + sizes[j + 1] <= max_tokens:
            if units[j][1] and used >= max_tokens // 2:
                break  # a paragraph ends here and the passage is half full
            j += 1
            used += sizes[j]
        spans.append(Span(units[i][0].start, units[j][0].end))
        nxt = j + 1
        if overlap and nxt < len(units) and j > i and sizes[j] <= max_tokens // 4:
            nxt = j  # repeat the last short sentence at the start of the next passage
        i = nxt
    return spans
