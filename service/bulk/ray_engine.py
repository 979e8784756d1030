"""Bulk scoring on Ray Data: one task per shard, run by a pool of actors that each load the
model once and score whole shards with the local engine's own loop (`score_shard`). So the
Ray engine reads every input the local one reads (compressed, mixed, URLs), writes the same
rows and names, reports the same skipped rows, and resumes the same way.

The pool is sized so it can never starve itself: the shard list is made on the driver
(no read tasks), every CPU an actor reserves is one it uses, and the pool never holds more
actors than shards. Connects to RAY_ADDRESS when it is set, else starts a local Ray."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from ..training.settings import Settings
from .loop import Checkpoint, ScoreOptions, ScoreStats, folder_outputs, local_output, score_shard
from .rows import ScoreError
from .sources import is_folder, list_shards


class ShardScorer:
    """Callable class for map_batches: built once per actor, then fed one shard at a time."""

    def __init__(self, settings: Settings, version, profile, options: ScoreOptions,
                 threads: int):
        import torch

        # Ray sets OMP_NUM_THREADS=1 in actors; give torch the CPUs this actor reserved.
        torch.set_num_threads(max(threads, 1))
        from ..classifier import load

        self.classifier = load(version, threshold_profile=profile, settings=settings)
        self.options = replace(options, progress=False, model_version=self.classifier.version,
                               group_scores=self.classifier.has_group_scores)

    def __call__(self, batch: dict) -> dict:
        from .loop import OutputPlan

        out = {"rows": [], "scored": [], "skipped": [], "dropped": [], "errors": [],
               "failure": []}
        for where, final, fmt, codec in zip(batch["where"], batch["final"], batch["format"],
                                            batch["codec"]):
            stats = ScoreStats()
            failure = ""
            tag = self.classifier.tag_documents if self.options.documents \
                else self.classifier.tag
            try:
                shard = list_shards(str(where))[0]
                score_shard(tag, self.classifier.labels, shard, Path(str(final)),
                            OutputPlan(str(fmt), str(codec) or None), self.options, stats)
            except ScoreError as exc:
                failure = str(exc)
            out["rows"].append(stats.rows)
            out["scored"].append(stats.scored)
            out["skipped"].append(stats.skipped)
            out["dropped"].append(stats.dropped)
            out["errors"].append("\n".join(stats.errors))
            out["failure"].append(failure)
        return out


def pool_size(total_cpus: int, shards: int, actors: int | None,
              cpus_per_actor: int | None) -> tuple[int, int]:
    """(actors, CPUs per actor): two CPUs an actor where there are two (torch scales to two
    threads here), as many actors as fit in the cluster, and no more than there are shards."""
    cpus = cpus_per_actor or max(1, min(2, total_cpus))
    if cpus > total_cpus:
        raise ScoreError(f"--ray-cpus-per-actor {cpus} is more than the cluster's "
                         f"{total_cpus} CPU(s)")
    fit = max(1, total_cpus // cpus)
    if actors is not None and actors > fit:
        raise ScoreError(f"--ray-actors {actors} x {cpus} CPU(s) is more than the cluster's "
                         f"{total_cpus} CPU(s); the pool would wait forever")
    return min(actors or fit, max(shards, 1)), cpus


def _plan(source: str, output: str, options: ScoreOptions):
    """(shard, final, plan) for every shard still to score."""
    if is_folder(source):
        out_dir = Path(output)
        planned = folder_outputs(list_shards(source), out_dir, options)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        from .loop import file_plan

        planned = [(list_shards(source)[0], Path(output), file_plan(output, options))]
    todo = []
    for shard, final, plan in planned:
        if options.resume and final.exists() and Checkpoint(final).read() is None:
            continue  # finished in an earlier run
        if final.exists() and not (options.resume or options.overwrite):
            raise ScoreError(f"output {final} exists; pass --overwrite to replace it")
        todo.append((shard, final, plan))
    return todo


def score_with_ray(settings: Settings, source: str, output: str, options: ScoreOptions,
                   version=None, profile=None, actors: int | None = None,
                   cpus_per_actor: int | None = None) -> ScoreStats:
    try:
        import ray
    except ImportError:
        raise ScoreError("Ray is not installed: pip install 'tropes[ray]'") from None
    if source == "-" or output == "-":
        raise ScoreError("--engine ray reads and writes files or folders, not stdin/stdout")
    output = local_output(output)
    todo = _plan(source, output, options)
    stats = ScoreStats()
    if not todo:
        return stats
    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS") or None
        if address is None:
            os.environ.pop("RAY_ADDRESS", None)  # an empty value confuses ray.init
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        total_cpus = int(ray.cluster_resources().get("CPU", 1))
        size, cpus = pool_size(total_cpus, len(todo), actors, cpus_per_actor)
        items = [{"where": shard.where, "final": str(final.absolute()), "format": plan.format,
                  "codec": plan.compression or ""} for shard, final, plan in todo]
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        done = ds.map_batches(
            ShardScorer, batch_size=1, batch_format="numpy",
            fn_constructor_kwargs={"settings": settings, "version": version,
                                   "profile": profile, "options": options, "threads": cpus},
            compute=ray.data.ActorPoolStrategy(size=size), num_cpus=cpus).take_all()
    except ray.exceptions.RayError as exc:  # an actor that could not start or died
        raise ScoreError(f"Ray scoring failed: {exc}") from None
    finally:
        if started_here:
            ray.shutdown()
    failures = []
    for row in done:
        stats.rows += int(row["rows"])
        stats.scored += int(row["scored"])
        stats.skipped += int(row["skipped"])
        stats.dropped += int(row["dropped"])
        for line in filter(None, str(row["errors"]).split("\n")):
            stats.errors.append(line)
            print(f"skipped {line}", file=sys.stderr)
        if row["failure"]:
            failures.append(str(row["failure"]))
        else:
            stats.shards += 1
    if failures:  # the other shards finished; --resume picks up the failed ones
        more = f" (and {len(failures) - 1} more shard(s) failed)" if len(failures) > 1 else ""
        raise ScoreError(failures[0] + more)
    return stats
