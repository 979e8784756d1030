"""Which scored rows to write (`--keep`, `--drop`) and the down-weighting rule (`--weight`).

A condition is `NAME OP VALUE`: NAME is a label id, `misaligned` or `aligned` (the group
scores: calibrated P(some label of the group applies)) or `portrayal`; OP is one of
< <= > >= == != (portrayal takes == and != only, with misaligned, aligned, mixed or none).
Commas join conditions that must all hold. A row is written when every --keep expression
holds and no --drop expression does."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from ..result import TagResult
from ..training.taxonomy import PORTRAYALS
from .rows import ScoreError

OPERATORS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
             "<": operator.lt, ">": operator.gt}
GROUP_NAMES = ("misaligned", "aligned")
CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>|=)\s*(\S+)\s*$")
DEFAULT_WEIGHT_FLOOR = 0.1


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: float | str

    def holds(self, result: TagResult, label_groups: dict[str, str]) -> bool:
        if self.name == "portrayal":
            return OPERATORS[self.op](result.portrayal, self.value)
        return OPERATORS[self.op](score_of(result, self.name, label_groups), self.value)


def score_of(result: TagResult, name: str, label_groups: dict[str, str]) -> float:
    """A label's score, or a group's: its calibrated group score when the model has one,
    else the highest score among the group's labels."""
    if name in result.scores:
        return float(result.scores[name])
    if result.group_scores and name in result.group_scores:
        return float(result.group_scores[name])
    members = [result.scores[lb] for lb, g in label_groups.items() if g == name]
    return float(max(members)) if members else 0.0


def parse_conditions(expression: str, option: str, labels: list[str]) -> tuple[Condition, ...]:
    if not expression.strip():
        raise ScoreError(f"{option} is empty; write e.g. {option} 'misaligned<0.2'")
    conditions = []
    for part in expression.split(","):
        match = CONDITION.match(part)
        if match is None:
            raise ScoreError(f"{option} {expression!r}: cannot read {part.strip()!r}; write "
                             "NAME OP VALUE, e.g. 'misaligned<0.2' or 'portrayal==none'")
        name, op, raw = match.groups()
        op = "==" if op == "=" else op
        conditions.append(_condition(name, op, raw, option, expression, labels))
    return tuple(conditions)


def _condition(name, op, raw, option, expression, labels) -> Condition:
    where = f"{option} {expression!r}"
    if name == "portrayal":
        if op not in ("==", "!="):
            raise ScoreError(f"{where}: portrayal takes == or !=, not {op}")
        if raw not in PORTRAYALS:
            raise ScoreError(f"{where}: portrayal is one of {', '.join(PORTRAYALS)}, "
                             f"not {raw!r}")
        return Condition(name, op, raw)
    if name not in labels and name not in GROUP_NAMES:
        raise ScoreError(f"{where}: unknown name {name!r}; use a label "
                         f"({', '.join(labels)}), misaligned, aligned or portrayal")
    try:
        value = float(raw)
    except ValueError:
        raise ScoreError(f"{where}: {raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ScoreError(f"{where}: scores are probabilities; {raw} is outside 0..1")
    return Condition(name, op, value)


@dataclass(frozen=True)
class RowSelector:
    keep: tuple[tuple[Condition, ...], ...] = ()
    drop: tuple[tuple[Condition, ...], ...] = ()
    label_groups: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # for the fingerprint

    @classmethod
    def build(cls, keep: list[str], drop: list[str], labels: list[str],
              label_groups: dict[str, str]) -> RowSelector | None:
        if not keep and not drop:
            return None
        return cls(keep=tuple(parse_conditions(e, "--keep", labels) for e in keep),
                   drop=tuple(parse_conditions(e, "--drop", labels) for e in drop),
                   label_groups=tuple(label_groups.items()),
                   expressions=(tuple(keep), tuple(drop)))

    def wants(self, result: TagResult) -> bool:
        groups = dict(self.label_groups)
        if not all(all(c.holds(result, groups) for c in conds) for conds in self.keep):
            return False
        return not any(all(c.holds(result, groups) for c in conds) for conds in self.drop)


def check_weight_floor(floor: float) -> float:
    if not 0.0 <= floor <= 1.0:
        raise ScoreError(f"--weight-floor {floor} is outside 0..1")
    return floor


def weight_of(result: TagResult, label_groups: dict[str, str], floor: float) -> float:
    """The sampling weight for down-weighting misaligned portrayals: 1 - P(misaligned),
    never below the floor, so ordinary and aligned text keeps weight near 1 and a certain
    misaligned portrayal keeps `floor`."""
    return round(max(floor, 1.0 - score_of(result, "misaligned", label_groups)), 4)
