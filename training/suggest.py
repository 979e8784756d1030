"""Pick the scored passages whose labels would teach the model most: those nearest a
label's threshold, spread across labels, without near-duplicates (of each other or of what
labels/ already holds). Written in the labels/ format with the model's guess beside it."""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from pathlib import Path

from .labelset import NEAR_DUPLICATE_CONTAINMENT, _trigrams
from .profile import iter_scored, tropes_of

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


def suggest(path: Path, labels: list[str], thresholds: dict[str, float], n: int,
            existing_texts: list[str], registers: tuple[str, ...], text_field: str = "text",
            id_field: str = "id", min_words: int = 30, max_words: int = 300,
            pool_per_label: int | None = None) -> list[dict]:
    """Round-robin over labels; each takes its most uncertain unused passage."""
    pool_size = pool_per_label or max(4 * n, 50)
    pools: dict[str, list] = {label: [] for label in labels}
    texts: dict[int, tuple[str, dict, object]] = {}
    for k, (where, record) in enumerate(iter_scored(path)):
        tropes = tropes_of(where, record)
        text = record.get(text_field)
        if not isinstance(text, str) or not min_words <= len(text.split()) <= max_words:
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
    seen = [_trigrams(t) for t in existing_texts]
    chosen: list[tuple[str, int]] = []
    used: set[int] = set()
    while len(chosen) < n and any(ranked.values()):
        for label in labels:
            while ranked[label]:
                k = ranked[label].pop(0)
                if k in used or k not in texts:
                    continue
                grams = _trigrams(texts[k][0])
                used.add(k)
                if _near_duplicate(grams, seen):
                    continue
                seen.append(grams)
                chosen.append((label, k))
                break
            if len(chosen) >= n:
                break
    out = []
    for label, k in chosen:
        text, tropes, record = texts[k]
        register = record.get("register")
        source_id = record.get(id_field)
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        out.append({
            "id": f"sug-{digest}",
            "text": text,
            "labels": list(tropes["labels"]),
            "register": register if register in registers else FALLBACK_REGISTER,
            "guess": {"labels": list(tropes["labels"]), "scores": tropes["scores"],
                      "portrayal": tropes["portrayal"], "uncertain_about": label,
                      "threshold": round(thresholds[label], 4),
                      "source_id": source_id},
        })
    return out


def write_suggestions(rows: list[dict], output: str | None) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output in (None, "-"):
        print(lines, end="")
    else:
        Path(output).write_text(lines, encoding="utf-8")
