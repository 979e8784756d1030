"""Corpus portrayal profile over `tropes score` output: counts and shares with confidence
intervals, co-occurrence, score histograms with thresholds, per-group shares, top examples.
Streams the rows: memory grows with labels and groups, not with the corpus."""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bulk.rows import ScoreError
from .bulk.sources import lines_of, list_shards
from .result import is_tropes_object
from .training.errors import TropesError
from .training.taxonomy import PORTRAYALS

BINS = 50


class ProfileError(TropesError):
    pass


def iter_scored(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for every row of a scored file or folder of shards, compressed or
    not, local or an fsspec URL."""
    try:
        shards = list_shards(str(path))
        for shard in shards:
            yield from _shard_records(shard)
    except ScoreError as exc:
        raise ProfileError(str(exc)) from None


def _shard_records(shard) -> Iterator[tuple[str, dict]]:
    if shard.format == "parquet":
        import pyarrow.parquet as pq

        n = 0
        with shard.open_raw() as raw:
            for batch in pq.ParquetFile(raw).iter_batches(batch_size=2048):
                for record in batch.to_pylist():
                    n += 1
                    yield f"{shard.where}:row {n}", record
        return
    with shard.open_lines() as handle:
        for number, line in enumerate(lines_of(handle, shard.where), 1):
            if line.strip():
                try:
                    yield f"{shard.where}:{number}", json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    why = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid UTF-8"
                    raise ProfileError(f"{shard.where}:{number}: invalid JSON: {why}") from None


def tropes_of(where: str, record) -> dict:
    tropes = record.get("tropes") if isinstance(record, dict) else None
    if not is_tropes_object(tropes):
        raise ProfileError(f"{where}: no 'tropes' object; run `tropes score` on it first")
    return tropes


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a share k/n."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Profile:
    labels: list[str]
    thresholds: dict[str, float]
    rows: int = 0
    label_counts: Counter = field(default_factory=Counter)
    portrayal_counts: Counter = field(default_factory=Counter)
    cooccurrence: np.ndarray | None = None
    histograms: np.ndarray | None = None
    groups: dict = field(default_factory=lambda: defaultdict(lambda: {
        "rows": 0, "labels": Counter(), "portrayal": Counter()}))
    top: dict = field(default_factory=lambda: defaultdict(list))

    def add(self, record: dict, tropes: dict, group: str | None, row_id, text: str,
            keep: int) -> None:
        if self.cooccurrence is None:
            n = len(self.labels)
            self.cooccurrence = np.zeros((n, n), dtype=np.int64)
            self.histograms = np.zeros((n, BINS), dtype=np.int64)
        self.rows += 1
        present = [lb for lb in tropes["labels"] if lb in self.labels]
        self.label_counts.update(present)
        self.portrayal_counts[tropes["portrayal"]] += 1
        idx = [self.labels.index(lb) for lb in present]
        for i in idx:
            self.cooccurrence[i, idx] += 1
        for j, label in enumerate(self.labels):
            score = float(tropes["scores"].get(label, 0.0))
            self.histograms[j, min(int(score * BINS), BINS - 1)] += 1
            if label in present:
                entry = (score, self.rows, row_id, " ".join(str(text).split())[:240])
                if len(self.top[label]) < keep:
                    heapq.heappush(self.top[label], entry)
                else:
                    heapq.heappushpop(self.top[label], entry)
        if group is not None:
            g = self.groups[group]
            g["rows"] += 1
            g["labels"].update(present)
            g["portrayal"][tropes["portrayal"]] += 1


def build_profile(path: Path, labels: list[str], thresholds: dict[str, float],
                  by: str | None = None, id_field: str = "id", text_field: str = "text",
                  keep: int = 5) -> Profile:
    profile = Profile(labels=labels, thresholds=thresholds)
    for where, record in iter_scored(path):
        tropes = tropes_of(where, record)
        group = None
        if by is not None:
            group = str(record.get(by, "(missing)"))
        row_id = record.get(id_field, where)
        profile.add(record, tropes, group, row_id, record.get(text_field, ""), keep)
    if profile.rows == 0:
        raise ProfileError(f"{path} has no rows")
    return profile


def _share(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:.1%} ({lo:.1%}-{hi:.1%})" if n else "-"


def summary_table(profile: Profile) -> str:
    n = profile.rows
    lines = [f"{'':<22}{'rows':>8}  share (95% CI)"]
    for p in PORTRAYALS:
        k = profile.portrayal_counts[p]
        lines.append(f"{'portrayal ' + p:<22}{k:>8}  {_share(k, n)}")
    for label in profile.labels:
        k = profile.label_counts[label]
        lines.append(f"{label:<22}{k:>8}  {_share(k, n)}")
    lines.append(f"{'total rows':<22}{n:>8}")
    return "\n".join(lines)


def _plots(profile: Profile, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(profile.cooccurrence, cmap="viridis")
    ax.set_xticks(range(len(profile.labels)), profile.labels, rotation=60, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(profile.labels)), profile.labels, fontsize=8)
    for i in range(len(profile.labels)):
        for j in range(len(profile.labels)):
            ax.text(j, i, str(profile.cooccurrence[i, j]), ha="center", va="center",
                    fontsize=6, color="white")
    fig.colorbar(im, ax=ax, label="rows with both labels")
    ax.set_title("Label co-occurrence")
    fig.tight_layout()
    fig.savefig(out / "cooccurrence.png", dpi=90)
    plt.close(fig)
    names.append("cooccurrence.png")

    cols = 5
    rows = math.ceil(len(profile.labels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    edges = np.linspace(0, 1, BINS + 1)
    for j, label in enumerate(profile.labels):
        ax = axes[j // cols][j % cols]
        ax.bar(edges[:-1], profile.histograms[j], width=1 / BINS, align="edge")
        ax.set_yscale("log")
        if label in profile.thresholds:
            ax.axvline(profile.thresholds[label], color="C3", linestyle="--")
        ax.set_title(label, fontsize=9)
        ax.set_xlim(0, 1)
    for j in range(len(profile.labels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("Score histograms (log count; dashed line = threshold)")
    fig.tight_layout()
    fig.savefig(out / "score_histograms.png", dpi=90)
    plt.close(fig)
    names.append("score_histograms.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    shares = [profile.label_counts[lb] / profile.rows for lb in profile.labels]
    errors = np.array([[s - wilson(profile.label_counts[lb], profile.rows)[0],
                        wilson(profile.label_counts[lb], profile.rows)[1] - s]
                       for lb, s in zip(profile.labels, shares)]).T
    ax.bar(profile.labels, shares, yerr=errors, capsize=3)
    ax.set_ylabel("share of rows")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.set_title("Share of rows per label (95% CI)")
    fig.tight_layout()
    fig.savefig(out / "label_shares.png", dpi=90)
    plt.close(fig)
    names.append("label_shares.png")
    return names


def write_profile(profile: Profile, out: Path, source: str, by: str | None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(profile, out)
    md = [f"# Corpus portrayal profile: `{source}`", "", f"{profile.rows:,} rows.", "",
          "```", summary_table(profile), "```", ""]
    for name in plots:
        md += [f"![{name}]({name})", ""]
    if by is not None:
        md += [f"## By `{by}`", "",
               "| group | rows | " + " | ".join(PORTRAYALS) + " | "
               + " | ".join(profile.labels) + " |",
               "|---" * (2 + len(PORTRAYALS) + len(profile.labels)) + "|"]
        for name, g in sorted(profile.groups.items()):
            cells = [_share(g["portrayal"][p], g["rows"]) for p in PORTRAYALS]
            cells += [_share(g["labels"][lb], g["rows"]) for lb in profile.labels]
            md.append(f"| {name} | {g['rows']} | " + " | ".join(cells) + " |")
        md.append("")
    md += ["## Top examples per label", ""]
    for label in profile.labels:
        md.append(f"### {label}")
        for score, _, row_id, snippet in sorted(profile.top.get(label, []), reverse=True):
            md.append(f"- `{row_id}` ({score:.2f}): {snippet}")
        md.append("")
    path = out / "profile.md"
    path.write_text("\n".join(md))
    return path
