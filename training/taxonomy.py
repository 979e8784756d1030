"""The label set, read from labels/taxonomy.yaml: ids, order, groups and definitions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import TropesError

GROUPS = ("misaligned", "aligned")
PORTRAYALS = ("misaligned", "aligned", "mixed", "none")


class TaxonomyError(TropesError, ValueError):
    pass


def portrayal_of(misaligned: bool, aligned: bool) -> str:
    """The derived summary (shared/TAXONOMY.md): the one place the rule is written."""
    if misaligned and aligned:
        return "mixed"
    if misaligned:
        return "misaligned"
    return "aligned" if aligned else "none"


@dataclass(frozen=True)
class Label:
    id: str
    group: str
    definition: str
    in_scope: tuple[str, ...] = ()
    near_misses: tuple[str, ...] = ()
    keywords: str = ""  # regex of the label's obvious words, for labels stats


@dataclass(frozen=True)
class Taxonomy:
    labels: tuple[Label, ...]
    min_words: int = 30
    max_words: int = 300
    min_positives: int = 80
    min_test_positives: int = 15
    registers: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        return [label.id for label in self.labels]

    def group_of(self, label_id: str) -> str:
        for label in self.labels:
            if label.id == label_id:
                return label.group
        raise KeyError(label_id)

    def portrayal(self, present: list[str] | set[str]) -> str:
        groups = {self.group_of(label) for label in present}
        return portrayal_of("misaligned" in groups, "aligned" in groups)

    def to_json(self) -> list[dict]:
        return [
            {"id": lb.id, "group": lb.group, "definition": lb.definition} for lb in self.labels
        ]


def load_taxonomy(path: Path) -> Taxonomy:
    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaxonomyError(f"{where}: taxonomy file not found") from None
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{where}: invalid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        raise TaxonomyError(f"{where}: expected a mapping with a 'labels' list")
    labels, seen = [], set()
    for index, entry in enumerate(data["labels"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise TaxonomyError(f"{where}: labels[{index}] needs an 'id' string")
        label_id = entry["id"]
        if label_id in seen:
            raise TaxonomyError(f"{where}: labels[{index}] repeats id {label_id!r}")
        if entry.get("group") not in GROUPS:
            raise TaxonomyError(
                f"{where}: labels[{index}] ({label_id}) group must be one of {GROUPS}"
            )
        seen.add(label_id)
        labels.append(
            Label(
                id=label_id,
                group=entry["group"],
                definition=str(entry.get("definition", "")).strip(),
                in_scope=tuple(entry.get("in_scope") or ()),
                near_misses=tuple(entry.get("near_misses") or ()),
                keywords=str(entry.get("keywords") or ""),
            )
        )
    bounds = data.get("passage_words") or {}
    return Taxonomy(
        labels=tuple(labels),
        min_words=int(bounds.get("min", 30)),
        max_words=int(bounds.get("max", 300)),
        min_positives=int(data.get("min_positives", 80)),
        min_test_positives=int(data.get("min_test_positives", 15)),
        registers=tuple(data.get("registers") or ()),
    )
