"""Bulk scoring on Ray Data: the same classifier in a pool of actors, each loading the model
once; shards are read and written by the cluster. Connects to RAY_ADDRESS when it is set,
else starts a local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

from ..result import arrow_type
from ..training.settings import Settings
from .loop import ScoreOptions, ScoreStats
from .rows import ScoreError, check_record, file_format, list_shards


class RayScorer:
    """Callable class for map_batches: built once per actor, then fed pyarrow batches."""

    def __init__(self, settings: Settings, version, profile, options: ScoreOptions,
                 threads: int):
        import torch

        # Ray sets OMP_NUM_THREADS=1 in actors; give torch the CPUs this actor reserved.
        torch.set_num_threads(max(threads, 1))
        from ..classifier import load

        self.classifier = load(version, threshold_profile=profile, settings=settings)
        self.options = options
        self.tropes_type = arrow_type(self.classifier.labels, options.documents,
                                      options.group_scores)

    def __call__(self, batch):
        import pyarrow as pa

        opts = self.options
        records = batch.to_pylist()
        keep = []
        for i, record in enumerate(records):
            problem = check_record(record, opts.text_field)
            if problem is None:
                keep.append(i)
            elif opts.on_error == "fail":
                where = (f"row with {opts.id_field}={record.get(opts.id_field)!r}"
                         if opts.id_field else "a row")
                raise ScoreError(f"{where}: {problem}")
        if len(keep) != len(records):
            batch = batch.take(pa.array(keep, type=pa.int64()))
            records = [records[i] for i in keep]
        texts = [r[opts.text_field] for r in records]
        tag = self.classifier.tag_documents if opts.documents else self.classifier.tag
        results = [r.to_arrow(opts.documents) for r in tag(texts)]
        if "tropes" in batch.column_names:
            batch = batch.drop_columns(["tropes"])
        return batch.append_column("tropes", pa.array(results, type=self.tropes_type))


def _files(source: Path) -> tuple[list[str], str]:
    files = [str(p) for p in list_shards(source)]
    formats = {file_format(f) for f in files}
    if len(formats) > 1:
        raise ScoreError(f"{source} mixes JSONL and Parquet shards; score them separately")
    return files, formats.pop()


def score_with_ray(settings: Settings, source: str, output: str, options: ScoreOptions,
                   version=None, profile=None, actors: int | None = None,
                   cpus_per_actor: int | None = None) -> ScoreStats:
    try:
        import ray
    except ImportError:
        raise ScoreError("Ray is not installed: pip install 'tropes[ray]'") from None
    if source == "-" or output == "-":
        raise ScoreError("--engine ray reads and writes files or folders, not stdin/stdout")
    files, in_format = _files(Path(source))
    out_dir = Path(output)
    if out_dir.exists() and any(out_dir.iterdir()) and not options.overwrite:
        raise ScoreError(f"output folder {output} is not empty; pass --overwrite")
    out_format = "parquet" if output.rstrip("/").endswith("parquet") else in_format
    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS") or None
        if address is None:
            os.environ.pop("RAY_ADDRESS", None)  # an empty value confuses ray.init
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        total_cpus = int(ray.cluster_resources().get("CPU", 1))
        cpus = cpus_per_actor or max(1, min(2, total_cpus))
        # leave a CPU for Ray Data's read and write tasks, or they can starve behind the pool
        size = actors or max(1, (total_cpus - 1) // cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        if in_format == "parquet":
            ds = ray.data.read_parquet(files)
        else:
            ds = ray.data.read_json(files, lines=True)
        scored = ds.map_batches(
            RayScorer, batch_format="pyarrow", batch_size=options.chunk_rows,
            fn_constructor_kwargs={"settings": settings, "version": version,
                                   "profile": profile, "options": options, "threads": cpus},
            compute=ray.data.ActorPoolStrategy(size=size), num_cpus=cpus)
        if out_dir.exists() and options.overwrite:
            for old in out_dir.iterdir():
                if old.is_file():
                    old.unlink()
        if out_format == "parquet":
            scored.write_parquet(str(out_dir))
        else:
            scored.write_json(str(out_dir), force_ascii=False)
        shards = sum(1 for _ in out_dir.iterdir())
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), ScoreError) else None
        raise ScoreError(str(cause) if cause else f"Ray scoring failed: {exc}") from None
    finally:
        if started_here:
            ray.shutdown()
    stats = ScoreStats(shards=shards)
    stats.scored = _count_rows(out_dir)
    return stats


def _count_rows(out_dir: Path) -> int:
    import pyarrow.parquet as pq

    total = 0
    for path in out_dir.iterdir():
        if path.suffix == ".parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        elif path.is_file():
            with open(path, "rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total
