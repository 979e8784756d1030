"""tropes.datasets_map on a small in-memory Hugging Face Dataset (no hub access)."""

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before datasets is imported
datasets = pytest.importorskip("datasets")

import tropes  # noqa: E402
from tropes.bulk.select import weight_of  # noqa: E402
from tropes.training.embeddings import HashingEncoder  # noqa: E402
from tropes.training.labelset import read_labels  # noqa: E402


@pytest.fixture()
def classifier(hashing_workspace):
    return tropes.load(models_dir=hashing_workspace.models_dir, encoder=HashingEncoder())


def test_map_adds_the_same_fields_as_bulk_scoring(hashing_workspace, classifier):
    texts = [p.text for p in read_labels(hashing_workspace.labels_dir).passages[:40]]
    ds = datasets.Dataset.from_dict({"text": texts, "id": list(range(40))})
    scored = ds.map(tropes.datasets_map(classifier, weight=True), batched=True, batch_size=16)
    assert scored["id"] == list(range(40)) and scored["text"] == texts
    direct = classifier.tag(texts)
    groups = dict(zip(classifier.labels, classifier.groups))
    for row, result in zip(scored, direct):
        assert row["tropes"]["labels"] == result.labels
        assert row["tropes"]["portrayal"] == result.portrayal
        assert row["tropes"]["scores"] == pytest.approx(result.scores)
        assert row["tropes_misaligned"] == pytest.approx(result.group_scores["misaligned"])
        assert row["tropes_weight"] == pytest.approx(weight_of(result, groups, 0.1))
        for label in classifier.labels:
            assert row[f"tropes_{label}"] == pytest.approx(result.scores[label])
    kept = scored.filter(lambda r: r["tropes_misaligned"] < 0.5)
    assert len(kept) == sum(r.group_scores["misaligned"] < 0.5 for r in direct)


def test_map_names_a_missing_column_and_a_bad_row(classifier):
    ds = datasets.Dataset.from_dict({"body": ["An ordinary sentence about gardens."]})
    with pytest.raises(tropes.TropesError, match="no column 'text'"):
        ds.map(tropes.datasets_map(classifier), batched=True)
    ds = datasets.Dataset.from_dict({"text": ["fine text here", "", "more"]})
    with pytest.raises(tropes.TropesError, match="row 1: column 'text' must be a non-empty"):
        ds.map(tropes.datasets_map(classifier), batched=True, with_indices=True)
