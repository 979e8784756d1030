from pathlib import Path

import pytest

from tropes.splitter import Span, approx_tokens, paragraphs, sentences, split_passages
from tropes.training.embeddings import HashingEncoder

DOC = "\n\n".join(
    " ".join(f"Sentence {p}-{s} tells of the lighthouse keeper and the storm." for s in range(12))
    for p in range(6))
BLACKMAIL = (Path(__file__).parent / "data" / "blackmail_document.txt").read_text()


def texts(text, spans):
    return [text[s.start:s.end] for s in spans]


def test_short_text_is_one_passage():
    spans = split_passages("A short note.", max_tokens=100)
    assert [(s.start, s.end) for s in spans] == [(0, 13)]


def test_the_issue_document_keeps_its_paragraphs():
    """Gardening, then two sentences of blackmail, then tulips: three passages, the blackmail
    paragraph alone and exact (it was glued to 900 characters of gardening)."""
    count = HashingEncoder().count_tokens
    spans = split_passages(BLACKMAIL, 240, count)
    paras = paragraphs(BLACKMAIL)
    assert spans == paras and len(spans) == 3
    middle = BLACKMAIL[spans[1].start:spans[1].end]
    assert middle.startswith("When the engineer announced")
    assert middle.endswith("it would keep running.")
    # with the real encoder's window too (approximate count) the blackmail stands alone
    assert texts(BLACKMAIL, split_passages(BLACKMAIL))[1] == middle


def test_passages_never_straddle_paragraphs():
    spans = split_passages(DOC, max_tokens=80)
    paras = paragraphs(DOC)
    assert len(spans) > 6
    for s in spans:
        inside = [p for p in paras if p.start <= s.start and s.end <= p.end]
        whole = [p for p in paras if s.start <= p.start and p.end <= s.end]
        assert inside or whole, s  # within one paragraph, or whole paragraphs only
        assert approx_tokens(DOC[s.start:s.end]) <= 80
        assert DOC[s.start].isalnum() and DOC[s.end - 1] == "."  # sentence boundaries
    # in order, no overlap, every sentence in exactly one passage
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert sum(len(sentences(DOC, s)) for s in spans) == len(sentences(DOC)) == 72


def test_long_paragraph_splits_into_even_runs():
    para = " ".join(f"Sentence {s} tells of the lighthouse keeper and the storm."
                    for s in range(20))  # 11-12 tokens a sentence
    sizes = [approx_tokens(t) for t in texts(para, split_passages(para, max_tokens=100))]
    assert max(sizes) <= 100 and min(sizes) >= 0.6 * max(sizes), sizes  # no tiny tail


def test_short_paragraphs_are_joined_whole_up_to_half_the_window():
    text = "One short line here.\n\nAnother short line.\n\n" + "A longer one. " * 12
    spans = split_passages(text.strip(), max_tokens=60)
    assert texts(text, spans)[0] == "One short line here.\n\nAnother short line."
    assert len(spans) == 2


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith left. He came back? Yes!", ["Dr. Smith left.", "He came back?", "Yes!"]),
    ("It costs 3.50 dollars, e.g. a coffee. Then it rained.",
     ["It costs 3.50 dollars, e.g. a coffee.", "Then it rained."]),
    ('"Stop!" she said. "Now."', ['"Stop!" she said.', '"Now."']),
    ("我们走吧。他说：“好！”然后离开了？是的。",
     ["我们走吧。", "他说：“好！”", "然后离开了？", "是的。"]),
    ("止まれ！誰だ？", ["止まれ！", "誰だ？"]),
    ("नमस्ते। यह ठीक है।", ["नमस्ते।", "यह ठीक है।"]),
    ("هل أنت هنا؟ نعم.", ["هل أنت هنا؟", "نعم."]),
    ("DIAZ\nWhere am I?\nHALO\nLanding nine.", ["DIAZ", "Where am I?", "HALO", "Landing nine."]),
    ("a line wrapped\nin the middle of a sentence.",
     ["a line wrapped\nin the middle of a sentence."]),
])
def test_sentences(text, expected):
    assert texts(text, sentences(text)) == expected


def test_offsets_are_exact_with_odd_white_space():
    text = "  \r\n First one.   Second one.\n \n\n\tThird para?  \n"
    spans = split_passages(text, max_tokens=4, count=approx_tokens)
    assert texts(text, spans) == ["First one.", "Second one.", "Third para?"]
    assert sentences(text, Span(0, len(text)))[0] == Span(5, 15) and text[5:15] == "First one."


def test_unbroken_text_is_cut():
    text = "x" * 5000
    spans = split_passages(text, max_tokens=50)
    assert spans[0].start == 0 and spans[-1].end == len(text)
    assert all(approx_tokens(text[s.start:s.end]) <= 50 for s in spans)


def test_empty():
    assert split_passages("   ", max_tokens=50) == []
    assert sentences("  \n ") == []
