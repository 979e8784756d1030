"""Scoring a Hugging Face `datasets.Dataset` with `Dataset.map(batched=True)`:

    import datasets, tropes
    classifier = tropes.load()
    scored = ds.map(tropes.datasets_map(classifier), batched=True, batch_size=256)
    kept = scored.filter(lambda row: row["tropes_misaligned"] < 0.2)

Each row gains the `tropes` struct that Parquet output has (labels, scores, portrayal, group
scores, weight when asked) and the same flat `tropes_*` columns; other columns are untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from .bulk.select import weight_of
from .result import flat_columns
from .text_checks import unencodable_at
from .training.errors import TropesError


class DatasetsMapError(TropesError):
    """A batch that cannot be scored; the message names the column and row."""


def datasets_map(classifier, text_column: str = "text", documents: bool = False,
                 weight: bool = False, weight_floor: float = 0.1) -> Callable[[dict], dict]:
    """A function for `Dataset.map(fn, batched=True)` that adds the tropes fields."""
    labels = list(classifier.labels)
    label_groups = dict(zip(classifier.labels, classifier.groups))
    groups = classifier.has_group_scores
    tag = classifier.tag_documents if documents else classifier.tag

    def add_tropes(batch: dict, indices: list[int] | None = None) -> dict:
        if text_column not in batch:
            raise DatasetsMapError(f"the dataset has no column {text_column!r} (it has "
                                   f"{sorted(batch)}); pass text_column=")
        texts = batch[text_column]
        for k, text in enumerate(texts):
            row = indices[k] if indices is not None else k
            if not isinstance(text, str) or not text.strip():
                raise DatasetsMapError(f"row {row}: column {text_column!r} must be a "
                                       f"non-empty string, got {text!r:.40}")
            if unencodable_at(text) is not None:
                raise DatasetsMapError(f"row {row}: column {text_column!r} is not valid "
                                       "Unicode (a lone surrogate)")
        results = tag(list(texts))
        out: dict[str, list] = {"tropes": []}
        for result in results:
            if weight:
                result.extra["weight"] = weight_of(result, label_groups, weight_floor)
            out["tropes"].append(result.to_arrow(documents))
            for name, value in flat_columns(result, labels, groups, weight).items():
                out.setdefault(name, []).append(value)
        return out

    return add_tropes
