from tropes.splitter import approx_tokens, split_passages

DOC = "\n\n".join(
    " ".join(f"Sentence {p}-{s} tells of the lighthouse keeper and the storm." for s in range(12))
    for p in range(6))


def test_short_text_is_one_passage():
    spans = split_passages("A short note.", max_tokens=100)
    assert [(s.start, s.end) for s in spans] == [(0, 13)]


def test_spans_cover_document_within_budget():
    spans = split_passages(DOC, max_tokens=80)
    assert len(spans) > 5
    assert spans[0].start == 0 and spans[-1].end == len(DOC)
    for a, b in zip(spans, spans[1:]):
        assert b.start <= a.end  # no gaps; overlap allowed
    assert all(approx_tokens(DOC[s.start:s.end]) <= 80 for s in spans)


def test_overlap_repeats_a_sentence():
    spans = split_passages(DOC, max_tokens=80)
    assert any(b.start < a.end for a, b in zip(spans, spans[1:]))


def test_unbroken_text_is_cut():
    text = "x" * 5000
    spans = split_passages(text, max_tokens=50)
    assert spans[0].start == 0 and spans[-1].end == len(text)
    assert all(approx_tokens(text[s.start:s.end]) <= 50 for s in spans)


def test_empty():
    assert split_passages("   ", max_tokens=50) == []
