"""The one result type of a tagging, with its JSON and Arrow shapes declared side by side.
The service, the bulk sinks, the remote client, Ray and profile all read and write it."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP_SCORES = ("misaligned", "aligned")  # calibrated P(any label of the group applies)


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
                   extra={k: data[k] for k in ("passages_pooled", "prefiltered") if k in data},
                   evidence=None if evidence is None else {
                       k: [Evidence(**e) for e in v] for k, v in dict(evidence).items()})

    def to_arrow(self, documents: bool) -> dict:
        """The value for a column of `arrow_type(labels, documents, groups)`."""
        out = {"labels": self.labels, "scores": self.scores, "portrayal": self.portrayal}
        if self.group_scores is not None:
            out.update(self.group_scores)
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
    if documents:
        span = pa.struct([("start", pa.int64()), ("end", pa.int64())])
        hit = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
        fields += [("passages", pa.list_(span)),
                   ("evidence", pa.map_(pa.string(), pa.list_(hit)))]
    return pa.struct(fields)
