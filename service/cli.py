"""The `tropes` command line: a thin layer over the library (tropes.load, tropes.bulk,
tropes.training). Library code raises TropesError; this is the one place it becomes
'error: ...' with exit status 1."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from .training.errors import TropesError
from .training.settings import load_settings


class Failure(click.ClickException):
    """A user-facing error: printed as 'error: ...' with exit status 1, never a traceback."""

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class TropesGroup(click.Group):
    """Turns every TropesError raised by a command into a Failure, once, here."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TropesError as exc:
            for problem in getattr(exc, "problems", None) or []:
                click.echo(problem, err=True)
            raise Failure(str(exc)) from None
        except OSError as exc:  # a full disk, a read-only folder, a closed pipe: no traceback
            if exc.filename is None:  # most likely stdout itself: let exit not fail again
                from .bulk.sinks import silence_stdout

                silence_stdout()
            where = f", {exc.filename}" if exc.filename else ""
            raise Failure(f"{exc.strerror or exc}{where}") from None


def _settings(ctx):
    return ctx.obj["settings"]


@click.group(cls=TropesGroup)
@click.option("--labels-dir", type=click.Path(path_type=Path),
              help="default: ./labels if it exists, else the taxonomy shipped in the package")
@click.option("--models-dir", type=click.Path(path_type=Path),
              help="default: ./models when the working directory has one, else the models/ "
                   "of the installed tropes (see `tropes models`)")
@click.option("--encoder", type=click.Choice(["minilm", "hashing"]), default=None,
              help="hashing is a tiny test encoder; default minilm")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="encoder precision; auto = bf16 where the CPU has bf16 instructions")
@click.option("--no-prefilter", is_flag=True,
              help="send every passage to the encoder (default: the model's cascade "
                   "prefilter, when it has one, skips passages that cannot carry a label)")
@click.pass_context
def main(ctx, labels_dir, models_dir, encoder, precision, no_prefilter):
    """tropes: find passages that portray AI as misaligned or aligned."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    ctx.obj = {"settings": load_settings(labels_dir=labels_dir, models_dir=models_dir,
                                         encoder=encoder, precision=precision,
                                         prefilter=False if no_prefilter else None),
               "precision_asked": precision is not None or "TROPES_PRECISION" in os.environ}


# --- labels -----------------------------------------------------------------------------

@main.group()
def labels():
    """Check and count the labelled passages."""


@labels.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.pass_context
def labels_check(ctx, path):
    """Validate labels/ (or PATH); print every problem as file:line: message."""
    from .training.labelset import read_labels

    folder = path or _settings(ctx).labels_dir
    result = read_labels(folder)
    for problem in result.problems:
        click.echo(problem)
    if result.problems:
        raise Failure(f"{len(result.problems)} problem(s) in {folder}")
    click.echo(f"ok: {len(result.passages)} passages, {len(result.taxonomy.ids)} labels")


@labels.command("stats")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.pass_context
def labels_stats(ctx, path):
    """Counts per label, register and split."""
    from .training.labelset import read_labels, stats_table

    result = read_labels(path or _settings(ctx).labels_dir)
    click.echo(stats_table(result))
    if result.problems:
        click.echo(f"\n{len(result.problems)} problem(s); run 'tropes labels check'", err=True)


# --- train / eval -------------------------------------------------------------------------

@main.command()
@click.option("--min-recall", type=click.FloatRange(0.0, 1.0), default=None,
              help="pick thresholds that reach this recall per label instead of best F1")
@click.option("--force", is_flag=True, help="make the new model LATEST even if it is worse")
@click.option("--version", "version", default=None, help="version id (default: timestamp)")
@click.option("--no-cache", is_flag=True,
              help="embed everything afresh (bit-for-bit reproducible release builds)")
@click.option("--finetune", is_flag=True,
              help="first fine-tune a new encoder version on labels/train (slow: ~15-20 min "
                   "on 2 CPU cores); default: reuse the current model's encoder")
@click.option("--encoder-version", default=None,
              help="fit the head on this stored encoder version (models/encoders/)")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="fine-tuning epochs (default 4)")
@click.option("--device", default=None, help="cpu (default) or e.g. cuda for fine-tuning")
@click.pass_context
def train(ctx, min_recall, force, version, no_cache, finetune, encoder_version, epochs, device):
    """Validate labels/, train a new model version and (if not worse) make it LATEST."""
    from .training.finetune import FinetuneConfig
    from .training.metrics import format_metrics
    from .training.train import train as run_training

    settings = _settings(ctx)
    if device:
        settings = replace(settings, device=device)
    if (epochs is not None) and not finetune:
        raise Failure("--epochs applies to --finetune only")
    config = FinetuneConfig(epochs=epochs) if epochs else None
    outcome = run_training(settings, min_recall=min_recall, force=force, version=version,
                           use_cache=not no_cache, finetune=finetune, finetune_config=config,
                           encoder_version=encoder_version)
    model = outcome.model
    click.echo(f"embedded {outcome.newly_embedded} new passage(s)")
    click.echo(format_metrics(model.meta["metrics"]["test"]))
    where = settings.models_dir / model.version
    if outcome.promoted:
        click.echo(f"wrote {where}; LATEST -> {model.version} ({outcome.reason})")
    else:
        click.echo(f"wrote {where}; NOT promoted: {outcome.reason}")


def _load_classifier(ctx, version=None, profile=None, trained_precision=False):
    """trained_precision: encode at the precision the model was trained with, unless the
    user asked for one (so eval reproduces the stored numbers)."""
    from .classifier import load
    from .training.artifact import load_model

    settings = _settings(ctx)
    precision = None
    if trained_precision and not ctx.obj["precision_asked"]:
        recorded = load_model(settings.models_dir, version).meta.get("encoder") or {}
        precision = recorded.get("precision")
    return load(version, threshold_profile=profile, precision=precision, settings=settings)


@main.command("eval")
@click.option("--model", "version", default=None, help="model version (default LATEST)")
@click.option("--threshold-profile", type=click.Choice(["f1", "recall"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.pass_context
def eval_command(ctx, version, threshold_profile, as_json):
    """Per-label precision/recall/F1, micro/macro F1 and portrayal accuracy on the test split."""
    from .training.embeddings import embed_with_cache
    from .training.features import build_features
    from .training.labelset import read_labels
    from .training.metrics import evaluate, format_metrics

    settings = _settings(ctx)
    classifier = _load_classifier(ctx, version, threshold_profile, trained_precision=True)
    labels = read_labels(settings.labels_dir)
    if labels.taxonomy.ids != classifier.labels:
        raise Failure(f"model {classifier.version} labels {classifier.labels} differ from "
                      f"taxonomy.yaml {labels.taxonomy.ids}")
    texts, y = labels.matrix("test")
    vectors, _ = embed_with_cache(classifier.encoder, texts, settings.cache_dir, progress=True)
    scores = classifier.model.head.predict_proba(
        build_features(vectors, classifier.model.prototypes))
    metrics = evaluate(labels.taxonomy, y, classifier.model.present(scores, threshold_profile))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(f"model {classifier.version}, test split")
        click.echo(format_metrics(metrics))


# --- score ------------------------------------------------------------------------------

@main.command()
@click.argument("source", metavar="IN")
@click.option("--output", "-o", required=True,
              help="output file (.jsonl, .jsonl.gz, .jsonl.zst or .parquet), folder (for a "
                   "folder of shards), or -")
@click.option("--text-field", default="text", show_default=True)
@click.option("--id-field", default=None, help="field named in error messages")
@click.option("--model", "version", default=None, help="model version (default LATEST)")
@click.option("--threshold-profile", type=click.Choice(["f1", "recall"]), default=None,
              help="which stored thresholds to apply (default: the model's)")
@click.option("--documents", is_flag=True,
              help="rows are long documents: split into passages, add evidence")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="what to do with a bad row")
@click.option("--resume", is_flag=True, help="continue an interrupted run")
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--url", default=None,
              help="score through a running service (e.g. http://127.0.0.1:3000)")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="ray: Ray Data on RAY_ADDRESS or a local cluster")
@click.option("--ray-actors", type=int, default=None, help="actor pool size (ray engine)")
@click.option("--ray-cpus-per-actor", type=int, default=None, help="CPUs per actor (ray)")
@click.option("--keep", multiple=True, metavar="EXPR",
              help="write only rows where EXPR holds, e.g. 'misaligned<0.2' (repeatable; "
                   "all must hold)")
@click.option("--drop", multiple=True, metavar="EXPR",
              help="leave out rows where EXPR holds, e.g. 'deception>=0.5,aligned<0.5'")
@click.option("--weight", is_flag=True,
              help="add weight = max(floor, 1 - P(misaligned)) for down-weighting")
@click.option("--weight-floor", type=float, default=0.1, show_default=True,
              help="the lowest weight --weight gives")
@click.option("--compression", type=click.Choice(["none", "gzip", "zstd", "snappy", "lz4",
                                                   "brotli"]), default=None,
              help="output compression (default: each shard's own; Parquet: snappy)")
@click.option("--output-format", type=click.Choice(["jsonl", "parquet"]), default=None,
              help="folder output: write every shard as this (default: each shard's own)")
@click.pass_context
def score(ctx, source, output, text_field, id_field, version, threshold_profile, documents,
          on_error, resume, overwrite, quiet, url, engine, ray_actors, ray_cpus_per_actor,
          keep, drop, weight, weight_floor, compression, output_format):
    """Score rows of JSONL or Parquet (IN: a file, a folder of shards, or - for stdin).
    Every other field passes through; a `tropes` object is added to each row."""
    from .bulk.loop import ScoreOptions, score_path
    from .bulk.preflight import check_paths
    from .bulk.remote import RemoteTagger
    from .bulk.select import check_weight_floor

    settings = _settings(ctx)
    options = ScoreOptions(text_field=text_field, id_field=id_field, on_error=on_error,
                           resume=resume, overwrite=overwrite, progress=not quiet,
                           documents=documents, chunk_rows=settings.chunk_rows,
                           threshold_profile=threshold_profile, compression=compression,
                           output_format=output_format, weight=weight,
                           weight_floor=check_weight_floor(weight_floor))
    check_paths(source, output, options)  # before the model loads: fail in a second
    if (keep or drop or weight) and not url:  # names checked against model.json, before load
        options = _with_selection(options, _model_shape(settings, version), keep, drop)
    if engine == "ray":
        from .bulk.ray_engine import score_with_ray

        if url:
            raise Failure("--engine ray does not take --url")
        stats = score_with_ray(settings, source, output, options, version,
                               threshold_profile, ray_actors, ray_cpus_per_actor)
        click.echo(f"scored {stats.scored} row(s) on Ray into {output}, {_counts(stats)}",
                   err=True)
        return
    if url:
        if documents or version or threshold_profile:
            raise Failure("--url scores with the service's own model and thresholds; "
                          "drop --documents/--model/--threshold-profile")
        tag = RemoteTagger(url)
        labels = tag.labels()
        options = replace(options, model_version=tag.version,
                          group_scores=tag.has_group_scores)
        if keep or drop or weight:
            options = _with_selection(options, (labels, tag.groups), keep, drop)
    else:
        classifier = _load_classifier(ctx, version, threshold_profile)
        tag = classifier.tag_documents if documents else classifier.tag
        labels = classifier.labels
        options = replace(options, model_version=classifier.version,
                          group_scores=classifier.has_group_scores)
    try:
        stats = score_path(tag, labels, source, output, options)
    finally:
        if url:
            tag.close()
    used = tag.version if url else classifier.version
    click.echo(f"scored {stats.scored} row(s), {_counts(stats)}, model {used}", err=True)


def _counts(stats) -> str:
    text = f"skipped {stats.skipped}"
    return text + (f", dropped {stats.dropped} by --keep/--drop" if stats.dropped else "")


def _model_shape(settings, version) -> tuple[list[str], dict[str, str]]:
    """The labels and their groups of the model that will score, read from model.json."""
    from .training.artifact import load_model

    model = load_model(settings.models_dir, version or settings.model_version)
    return list(model.labels), dict(zip(model.labels, model.groups))


def _with_selection(options, shape, keep, drop):
    from .bulk.select import RowSelector

    labels, groups = shape
    return replace(options, label_groups=dict(groups),
                   selector=RowSelector.build(list(keep), list(drop), labels, dict(groups)))


# --- profile / suggest ---------------------------------------------------------------------

def _model_thresholds(settings, version, profile):
    from .training.artifact import load_model

    model = load_model(settings.models_dir, version)
    return model.labels, dict(zip(model.labels, model.threshold_vector(profile).tolist()))


@main.command()
@click.argument("scored", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("profile"),
              show_default=True, help="folder for profile.md and the plots")
@click.option("--by", default=None, help="grouping field, e.g. source or batch")
@click.option("--id-field", default="id", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--model", "version", default=None, help="whose thresholds to draw")
@click.option("--threshold-profile", type=click.Choice(["f1", "recall"]), default=None)
@click.pass_context
def profile(ctx, scored, output, by, id_field, text_field, version, threshold_profile):
    """What a scored corpus portrays: shares with 95% CIs, co-occurrence, histograms."""
    from .profile import build_profile, summary_table, write_profile

    labels, thresholds = _model_thresholds(_settings(ctx), version, threshold_profile)
    result = build_profile(scored, labels, thresholds, by=by, id_field=id_field,
                           text_field=text_field)
    path = write_profile(result, output, str(scored), by)
    click.echo(summary_table(result))
    click.echo(f"\nwrote {path} and plots in {output}")


@main.command()
@click.argument("scored", type=click.Path(path_type=Path))
@click.option("--n", "count", default=50, show_default=True, type=click.IntRange(1))
@click.option("--output", "-o", default=None, help="JSONL file (default: stdout)")
@click.option("--id-field", default="id", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--model", "version", default=None, help="whose thresholds to use")
@click.pass_context
def suggest(ctx, scored, count, output, id_field, text_field, version):
    """Passages to label next: nearest the thresholds, spread across labels, deduplicated.
    Written in the labels/ format with "labels": null and the model's guess; set the labels,
    then move the lines into labels/train/ (labels check refuses them until then)."""
    from .suggest import suggest as pick
    from .suggest import write_suggestions
    from .training.labelset import read_labels

    settings = _settings(ctx)
    labels, thresholds = _model_thresholds(settings, version, None)
    existing = read_labels(settings.labels_dir)
    tax = existing.taxonomy
    found = pick(scored, labels, thresholds, count, [p.text for p in existing.passages],
                 tax.registers, text_field=text_field, id_field=id_field,
                 min_words=tax.min_words, max_words=tax.max_words)
    write_suggestions(found.rows, output)
    click.echo(f"{len(found.rows)} passage(s) suggested"
               + (f" in {output}" if output and output != "-" else "")
               + "; set each 'labels' (null until reviewed), then move them into labels/",
               err=True)
    if (why := found.shortfall(count, tax.min_words, tax.max_words)) is not None:
        click.echo(why, err=True)


# --- models -------------------------------------------------------------------------------

@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx):
    """List model versions with their metrics; `models use VERSION` switches LATEST."""
    if ctx.invoked_subcommand is None:
        from .training.artifact import list_versions

        models_dir = _settings(ctx).models_dir
        rows = list_versions(models_dir)
        click.echo(f"models in {models_dir.resolve()}", err=True)
        if not rows:
            click.echo("no models yet: run 'tropes train'")
        for row in rows:
            mark = "*" if row["latest"] else " "
            if row["usable"]:
                test = row["metrics"].get("test", {})
                click.echo(f"{mark} {row['version']:<22} macro-F1 {test.get('macro_f1', 0):.3f}"
                           f"  micro-F1 {test.get('micro_f1', 0):.3f}  {row['created']}")
            else:
                click.echo(f"{mark} {row['version']:<22} UNUSABLE: {row['error']}")


@models.command("use")
@click.argument("version")
@click.pass_context
def models_use(ctx, version):
    """Make VERSION the LATEST model (roll back or forward)."""
    from .training.artifact import set_latest
    from .training.settings import default_dir

    models_dir = _settings(ctx).models_dir
    if ctx.find_root().params.get("models_dir") is None and "TROPES_MODELS_DIR" not in \
            os.environ and not (Path.cwd() / "models").is_dir():
        raise Failure(f"there is no ./models here, and the default would change the installed "
                      f"tropes' {default_dir('models')}; pass --models-dir to say which")
    set_latest(models_dir, version)
    click.echo(f"LATEST -> {version} in {models_dir.resolve()}")


# --- serve --------------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--model", "version", default=None, help="pin a version (default: follow LATEST)")
@click.pass_context
def serve(ctx, host, port, version):
    """Serve the HTTP API with BentoML (analytics and model-hub access off)."""
    from .training.artifact import load_model

    settings = _settings(ctx)
    if version:
        settings = replace(settings, model_version=version)
    load_model(settings.models_dir, settings.model_version)  # a clear error before BentoML
    # the whole settings travel to the service process, which reads them back
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", **settings.as_env())
    bentoml = Path(sys.executable).with_name("bentoml")
    args = [str(bentoml), "serve", "tropes.http.service:Tropes", "--host", host,
            "--port", str(port)]
    os.execve(args[0], args, env)
