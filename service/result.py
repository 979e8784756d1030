"""The one result type of a tagging, with its JSON and Arrow shapes declared side by side.
The service, the bulk sinks, the remote client, Ray and profile all read and write it."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP_SCORES = ("misaligned", "aligned")  # calibrated P(any label of the group applies)
# optional fields of a tropes object beside labels/scores/portrayal, in every shape:
# passages_pooled (a long text read as N passages), weight (`tropes score --weight`),
# prefiltered (the cascade's first stage rejected it: no labels, cheap scores)
EXTRA_FIELDS = ("passages_pooled", "weight", "prefiltered")
# Parquet output repeats the scores as top-level columns so query engines filter without
# unnesting: tropes_<label>, tropes_misaligned, tropes_aligned, tropes_portrayal, tropes_weight
FLAT_PREFIX = "tropes_"


@dataclass
class Evidence:
    start: int
    end: int
    score: float

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "score": self.score}


@dataclass
class TagResult:
    """labels present, a probability per label, the derived portrayal, and (for models that
    have them) the two group scores. Documents add their passages and evidence per label."""

    labels: list[str]
    scores: dict[str, float]
    portrayal: str
    group_scores: dict[str, float] | None = None
    passages: list[dict] | None = None  # documents: {"start", "end", labels, scores, ...}
    evidence: dict[str, list[Evidence]] | None = None
    extra: dict = field(default_factory=dict)  # e.g. truncation notes, kept in to_dict

    def to_dict(self) -> dict:
        out = {"labels": list(self.labels), "scores": dict(self.scores),
               "portrayal": self.portrayal}
        if self.group_scores is not None:
            out.update(self.group_scores)
        if self.passages is not None:
            out["passages"] = self.passages
        if self.evidence is not None:
            out["evidence"] = {k: [e.to_dict() for e in v] for k, v in self.evidence.items()}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TagResult:
        """Read a `tropes` object back (from a service answer or a scored row)."""
        groups = {g: float(data[g]) for g in GROUP_SCORES if data.get(g) is not None}
        evidence = data.get("evidence")
        return cls(labels=list(data["labels"]), scores=dict(data["scores"]),
                   portrayal=data["portrayal"], group_scores=groups or None,
                   passages=data.get("passages"),
                   extra={k: data[k] for k in EXTRA_FIELDS if k in data},
                   evidence=None if evidence is None else {
                       k: [Evidence(**e) for e in v] for k, v in dict(evidence).items()})

    def to_arrow(self, documents: bool) -> dict:
        """The value for a column of `arrow_type(labels, documents, groups)`."""
        out = {"labels": self.labels, "scores": self.scores, "portrayal": self.portrayal}
        if self.group_scores is not None:
            out.update(self.group_scores)
        out.update({k: self.extra.get(k) for k in EXTRA_FIELDS})
        if documents:
            out["passages"] = [{"start": p["start"], "end": p["end"]}
                               for p in self.passages or []]
            out["evidence"] = [(k, [e.to_dict() for e in v])
                               for k, v in (self.evidence or {}).items()]
        return out


def is_tropes_object(data) -> bool:
    return isinstance(data, dict) and {"labels", "scores", "portrayal"} <= set(data)


def arrow_type(labels: list[str], documents: bool, groups: bool = False):
    """The Arrow struct of a `tropes` column; the Parquet sink and Ray write it."""
    import pyarrow as pa

    fields = [("labels", pa.list_(pa.string())),
              ("scores", pa.struct([(lb, pa.float64()) for lb in labels])),
              ("portrayal", pa.string())]
    if groups:
        fields += [(g, pa.float64()) for g in GROUP_SCORES]
    fields += [("passages_pooled", pa.int64()), ("weight", pa.float64()),
               ("prefiltered", pa.bool_())]
    if documents:
        span = pa.struct([("start", pa.int64()), ("end", pa.int64())])
        hit = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
        fields += [("passages", pa.list_(span)),
                   ("evidence", pa.map_(pa.string(), pa.list_(hit)))]
    return pa.struct(fields)


def flat_fields(labels: list[str], groups: bool, weight: bool):
    """The Arrow fields of the flat columns, in column order."""
    import pyarrow as pa

    names = [lb for lb in labels] + (list(GROUP_SCORES) if groups else [])
    out = [pa.field(FLAT_PREFIX + n, pa.float64()) for n in names]
    out.append(pa.field(FLAT_PREFIX + "portrayal", pa.string()))
    if weight:
        out.append(pa.field(FLAT_PREFIX + "weight", pa.float64()))
    return out


def flat_columns(result: TagResult, labels: list[str], groups: bool, weight: bool) -> dict:
    """One row's values for `flat_fields`."""
    out = {FLAT_PREFIX + lb: result.scores.get(lb) for lb in labels}
    if groups:
        out.update({FLAT_PREFIX + g: (result.group_scores or {}).get(g) for g in GROUP_SCORES})
    out[FLAT_PREFIX + "portrayal"] = result.portrayal
    if weight:
        out[FLAT_PREFIX + "weight"] = result.extra.get("weight")
    return out
