"""Pick the scored passages whose labels would teach the model most: those nearest a
label's threshold, spread across labels, without near-duplicates (of each other or of what
labels/ already holds). Written in the labels/ format with `"labels": null` and the
model's guess beside it, so nothing is trained on before a person has reviewed it."""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .profile import ProfileError, iter_scored, tropes_of
from .training.labelset import NEAR_DUPLICATE_CONTAINMENT, word_trigrams

FALLBACK_REGISTER = "other"


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _near_duplicate(grams: set[str], seen: list[set[str]]) -> bool:
    for other in seen:
        shared = len(grams & other)
        if shared and shared / max(min(len(grams), len(other)), 1) >= NEAR_DUPLICATE_CONTAINMENT:
            return True
    return False


@dataclass
class Suggestions:
    rows: list[dict]
    scanned: int = 0
    wrong_length: int = 0
    near_duplicates: int = 0

    def shortfall(self, asked: int, min_words: int, max_words: int) -> str | None:
        """Why fewer passages came back than were asked for, or None."""
        if len(self.rows) >= asked:
            return None
        return (f"only {len(self.rows)} of {asked}: {self.scanned} row(s) scanned, "
                f"{self.wrong_length} outside {min_words}-{max_words} words, "
                f"{self.near_duplicates} near-duplicates of labels/ or of each other")


def suggest(path: Path, labels: list[str], thresholds: dict[str, float], n: int,
            existing_texts: list[str], registers: tuple[str, ...], text_field: str = "text",
            id_field: str = "id", min_words: int = 30, max_words: int = 300,
            pool_per_label: int | None = None) -> Suggestions:
    """Round-robin over labels; each takes its most uncertain unused passage."""
    found = Suggestions(rows=[])
    pool_size = pool_per_label or max(4 * n, 50)
    pools: dict[str, list] = {label: [] for label in labels}
    texts: dict[int, tuple[str, dict, object]] = {}
    for k, (where, record) in enumerate(iter_scored(path)):
        tropes = tropes_of(where, record)
        found.scanned += 1
        text = record.get(text_field)
        if not isinstance(text, str) or not min_words <= len(text.split()) <= max_words:
            found.wrong_length += 1
            continue
        kept = False
        for label in labels:
            margin = abs(_logit(float(tropes["scores"].get(label, 0.0)))
                         - _logit(thresholds[label]))
            entry = (-margin, k)
            if len(pools[label]) < pool_size:
                heapq.heappush(pools[label], entry)
                kept = True
            elif entry > pools[label][0]:
                heapq.heapreplace(pools[label], entry)
                kept = True
        if kept:
            texts[k] = (text, tropes, record)
    ranked = {label: [k for _, k in sorted(pool, reverse=True)]
              for label, pool in pools.items()}
    seen = [word_trigrams(t) for t in existing_texts]
    chosen: list[tuple[str, int]] = []
    used: set[int] = set()
    while len(chosen) < n and any(ranked.values()):
        for label in labels:
            while ranked[label]:
                k = ranked[label].pop(0)
                if k in used or k not in texts:
                    continue
                grams = word_trigrams(texts[k][0])
                used.add(k)
                if _near_duplicate(grams, seen):
                    found.near_duplicates += 1
                    continue
                seen.append(grams)
                chosen.append((label, k))
                break
            if len(chosen) >= n:
                break
    out = found.rows
    for label, k in chosen:
        text, tropes, record = texts[k]
        register = record.get("register")
        source_id = record.get(id_field)
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        out.append({
            "id": f"sug-{digest}",
            "text": text,
            "labels": None,  # unreviewed: `labels check` refuses it until a person sets it
            "register": register if register in registers else FALLBACK_REGISTER,
            "guess": {"labels": list(tropes["labels"]), "scores": tropes["scores"],
                      "portrayal": tropes["portrayal"], "uncertain_about": label,
                      "threshold": round(thresholds[label], 4),
                      "source_id": source_id},
        })
    return found


def write_suggestions(rows: list[dict], output: str | None) -> None:
    """Write to a new file (never over an existing one) or to stdout."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output in (None, "-"):
        print(lines, end="")
        return
    try:
        with open(output, "x", encoding="utf-8") as handle:
            handle.write(lines)
    except FileExistsError:
        raise ProfileError(f"output {output} exists; choose a new file (suggestions are "
                           "never written over a file you may have reviewed)") from None
