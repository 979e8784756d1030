"""Split text into paragraphs, sentences and passages that follow the text.

A passage is either a run of whole paragraphs that together stay short (`join_tokens`), or
one paragraph, or, for a paragraph longer than the encoder's window, a run of that
paragraph's sentences. A passage never joins the end of one paragraph to the start of
another. Sentences end at . ! ? … and their CJK, Arabic, Devanagari, Armenian and Ethiopic
counterparts, and at line breaks (screenplays, verse). Every span is [start, end) of the
original text with surrounding white space left out, so offsets are exact."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# a terminator, its closing quotes/brackets, then white space (Latin-style scripts), or a
# full-width terminator that needs no space after it (Chinese, Japanese)
SENTENCE_END = re.compile(
    r"[.!?…‽]+[\"'”’)\]»›]*(?=\s)"
    r"|[。！？｡]+[」』”’）)\]】〕》〉]*"
    r"|[؟۔।॥։።፧]+"
    r"|(?=\n)")
# a period after one of these does not end a sentence when a capital follows (Dr. Smith)
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc fig no vol ch pp approx dept gen col lt sgt capt"
    " rev hon inc ltd co corp e.g i.e cf al".split())


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def approx_tokens(text: str) -> int:
    """Word-piece count estimate: one per word or mark, more for long words."""
    return sum(1 + len(p) // 10 for p in re.findall(r"\w+|[^\w\s]", text))


def _strip(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end) if end > start else None


def paragraphs(text: str) -> list[Span]:
    """Blank-line separated paragraphs, white space trimmed, empty ones left out."""
    cuts = [0]
    for m in PARAGRAPH.finditer(text):
        cuts += [m.start(), m.end()]
    cuts.append(len(text))
    spans = (_strip(text, a, b) for a, b in zip(cuts[::2], cuts[1::2]))
    return [s for s in spans if s is not None]


def _is_false_end(text: str, end: int, limit: int) -> bool:
    """A period that is not a sentence end: an abbreviation or initial before a capital, or
    any terminator followed by a lower-case word (e.g. the), or a decimal point."""
    nxt = end
    while nxt < limit and text[nxt].isspace():
        nxt += 1
    if nxt >= limit:
        return False
    if text[nxt].islower():
        return True
    if text[end - 1] != ".":
        return False
    word = re.search(r"(\w[\w.]*)\.$", text[max(0, end - 12):end])
    if word is None:
        return False
    token = word.group(1).lower()
    return token in ABBREVIATIONS or (len(token) == 1 and token.isalpha())


def sentences(text: str, span: Span | None = None) -> list[Span]:
    """The sentences of text[span] (default: all of it), white space trimmed."""
    start, end = (0, len(text)) if span is None else (span.start, span.end)
    out: list[Span] = []
    begin = start
    for m in SENTENCE_END.finditer(text, start, end):
        cut = m.end()
        if cut <= begin or (m.group() and _is_false_end(text, cut, end)):
            continue
        if not m.group():  # a line break: not inside a hard-wrapped sentence
            nxt = cut + 1
            if nxt < end and text[nxt].islower():
                continue
        piece = _strip(text, begin, cut)
        if piece is not None:
            out.append(piece)
        begin = cut
    piece = _strip(text, begin, end)
    if piece is not None:
        out.append(piece)
    return out


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


def _split_paragraph(text: str, para: Span, size: int, max_tokens: int,
                     count: Callable[[str], int]) -> list[Span]:
    """A paragraph over the window: runs of its sentences, about equal in size, each within
    the window (an over-long sentence is cut at words)."""
    units: list[Span] = []
    for sentence in sentences(text, para):
        if count(text[sentence.start:sentence.end]) > max_tokens:
            units.extend(_cut_by_words(text, sentence, max_tokens, count))
        else:
            units.append(sentence)
    sizes = [count(text[u.start:u.end]) for u in units]
    target = math.ceil(sum(sizes) / math.ceil(size / max_tokens))
    spans: list[Span] = []
    i = 0
    while i < len(units):
        j, used = i, sizes[i]
        while j + 1 < len(units) and used < target and used + sizes[j + 1] <= max_tokens:
            j += 1
            used += sizes[j]
        spans.append(Span(units[i].start, units[j].end))
        i = j + 1
    return spans


def split_passages(text: str, max_tokens: int = 240,
                   count: Callable[[str], int] = approx_tokens,
                   join_tokens: int | None = None) -> list[Span]:
    """Passages of at most max_tokens that follow paragraphs: whole paragraphs are joined
    while together they stay within join_tokens (default half the window, about the median
    labelled passage), a paragraph up to the window is a passage of its own, a longer one is
    split at sentences. Spans are in text order and do not overlap."""
    join = max_tokens // 2 if join_tokens is None else min(join_tokens, max_tokens)
    spans: list[Span] = []
    run: Span | None = None  # whole short paragraphs being joined
    run_size = 0
    for para in paragraphs(text):
        size = count(text[para.start:para.end])
        if run is not None and (size > join or run_size + size > join):
            spans.append(run)
            run, run_size = None, 0
        if size > max_tokens:
            spans.extend(_split_paragraph(text, para, size, max_tokens, count))
        elif size > join:
            spans.append(para)
        elif run is None:
            run, run_size = para, size
        else:
            run, run_size = Span(run.start, para.end), run_size + size
    if run is not None:
        spans.append(run)
    return spans
