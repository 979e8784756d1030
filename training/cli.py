"""The `tropes` command line: one click group, small commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .config import load_settings


class Failure(click.ClickException):
    """A user-facing error: printed as 'error: ...' with exit status 1, never a traceback."""

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _settings(ctx) -> object:
    return ctx.obj["settings"]


@click.group()
@click.option("--labels-dir", type=click.Path(path_type=Path), help="default: ./labels")
@click.option("--models-dir", type=click.Path(path_type=Path), help="default: ./models")
@click.option("--encoder", type=click.Choice(["minilm", "hashing"]), default=None,
              help="hashing is a tiny test encoder; default minilm")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="encoder precision; auto = bf16 where the CPU has AMX, else fp32")
@click.pass_context
def main(ctx, labels_dir, models_dir, encoder, precision):
    """tropes: find passages that portray AI as misaligned or aligned."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    ctx.obj = {"settings": load_settings(labels_dir=labels_dir, models_dir=models_dir,
                                         encoder=encoder, precision=precision)}


# --- labels -----------------------------------------------------------------------------

@main.group()
def labels():
    """Check and count the labelled passages."""


@labels.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.pass_context
def labels_check(ctx, path):
    """Validate labels/ (or PATH); print every problem as file:line: message."""
    from .labelset import read_labels

    folder = path or _settings(ctx).labels_dir
    result = read_labels(folder)
    for problem in result.problems:
        click.echo(problem)
    if result.problems:
        click.echo(f"{len(result.problems)} problem(s) in {folder}", err=True)
        sys.exit(1)
    click.echo(f"ok: {len(result.passages)} passages, {len(result.taxonomy.ids)} labels")


@labels.command("stats")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.pass_context
def labels_stats(ctx, path):
    """Counts per label, register and split."""
    from .labelset import read_labels, stats_table

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
@click.pass_context
def train(ctx, min_recall, force, version, no_cache):
    """Validate labels/, train a new model version and (if not worse) make it LATEST."""
    from .artifact import ArtifactError
    from .metrics import format_metrics
    from .train import TrainingError
    from .train import train as run_training

    settings = _settings(ctx)
    try:
        outcome = run_training(settings, min_recall=min_recall, force=force, version=version,
                               use_cache=not no_cache)
    except TrainingError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise Failure(str(exc)) from None
    except ArtifactError as exc:
        raise Failure(str(exc)) from None
    model = outcome.model
    click.echo(f"embedded {outcome.newly_embedded} new passage(s)")
    click.echo(format_metrics(model.meta["metrics"]["test"]))
    where = settings.models_dir / model.version
    if outcome.promoted:
        click.echo(f"wrote {where}; LATEST -> {model.version} ({outcome.reason})")
    else:
        click.echo(f"wrote {where}; NOT promoted: {outcome.reason}")


def _load_predictor(settings, version=None, profile=None, trained_precision=False):
    """trained_precision: encode at the precision the model was trained with."""
    from .artifact import ArtifactError, load_model
    from .embeddings import load_encoder
    from .predictor import Predictor

    try:
        model = load_model(settings.models_dir, version)
        precision = settings.precision
        if trained_precision:
            precision = (model.meta.get("encoder") or {}).get("precision", precision)
        encoder = load_encoder(settings.encoder, precision, settings.batch_size)
        return Predictor(model, encoder, profile=profile)
    except ArtifactError as exc:
        raise Failure(str(exc)) from None


@main.command("eval")
@click.option("--model", "version", default=None, help="model version (default LATEST)")
@click.option("--threshold-profile", type=click.Choice(["f1", "recall"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.pass_context
def eval_command(ctx, version, threshold_profile, as_json):
    """Per-label precision/recall/F1, micro/macro F1 and portrayal accuracy on the test split."""
    from .embeddings import embed_with_cache
    from .features import build_features
    from .labelset import read_labels
    from .metrics import evaluate, format_metrics

    settings = _settings(ctx)
    # unless a precision is asked for, evaluate at the model's own, so numbers reproduce
    asked = ctx.parent.params.get("precision") is not None or "TROPES_PRECISION" in os.environ
    predictor = _load_predictor(settings, version, threshold_profile, trained_precision=not asked)
    labels = read_labels(settings.labels_dir)
    if labels.taxonomy.ids != predictor.labels:
        raise Failure(f"model {predictor.version} labels {predictor.labels} differ from "
                      f"taxonomy.yaml {labels.taxonomy.ids}")
    texts, y = labels.matrix("test")
    vectors, _ = embed_with_cache(predictor.encoder, texts, settings.cache_dir, progress=True)
    probs = predictor.model.head.predict_proba(
        build_features(vectors, predictor.model.prototypes))
    metrics = evaluate(labels.taxonomy, y, probs >= predictor.thresholds)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(f"model {predictor.version}, test split")
        click.echo(format_metrics(metrics))


# --- score ------------------------------------------------------------------------------

@main.command()
@click.argument("source", metavar="IN")
@click.option("--output", "-o", required=True,
              help="output file (.jsonl or .parquet), folder (for a folder of shards), or -")
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
@click.pass_context
def score(ctx, source, output, text_field, id_field, version, threshold_profile, documents,
          on_error, resume, overwrite, quiet, url, engine, ray_actors, ray_cpus_per_actor):
    """Score rows of JSONL or Parquet (IN: a file, a folder of shards, or - for stdin).
    Every other field passes through; a `tropes` object is added to each row."""
    from .remote import RemoteError, RemoteTagger
    from .scoring import ScoreError, ScoreOptions, score_path

    settings = _settings(ctx)
    options = ScoreOptions(text_field=text_field, id_field=id_field, on_error=on_error,
                           resume=resume, overwrite=overwrite, progress=not quiet,
                           documents=documents)
    if engine == "ray":
        from .ray_engine import score_with_ray

        if url or resume:
            raise Failure("--engine ray does not take --url or --resume")
        try:
            stats = score_with_ray(settings, source, output, options, version,
                                   threshold_profile, ray_actors, ray_cpus_per_actor)
        except ScoreError as exc:
            raise Failure(str(exc)) from None
        click.echo(f"scored {stats.scored} row(s) on Ray into {output}", err=True)
        return
    if url:
        if documents or version or threshold_profile:
            raise Failure("--url scores with the service's own model and thresholds; "
                          "drop --documents/--model/--threshold-profile")
        tag = RemoteTagger(url)
        try:
            labels = tag.labels()
        except RemoteError as exc:
            raise Failure(str(exc)) from None
    else:
        predictor = _load_predictor(settings, version, threshold_profile)
        tag = predictor.tag_documents if documents else predictor.tag
        labels = predictor.labels
    try:
        stats = score_path(tag, labels, source, output, options)
    except (ScoreError, RemoteError) as exc:
        raise Failure(str(exc)) from None
    finally:
        if url:
            tag.close()
    used = tag.version if url else predictor.version
    click.echo(f"scored {stats.scored} row(s), skipped {stats.skipped}, model {used}", err=True)


# --- profile / suggest ---------------------------------------------------------------------

def _model_thresholds(settings, version, profile):
    from .artifact import ArtifactError, load_model

    try:
        model = load_model(settings.models_dir, version)
        return model.labels, dict(zip(model.labels, model.threshold_vector(profile).tolist()))
    except ArtifactError as exc:
        raise Failure(str(exc)) from None


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
    from .profile import ProfileError, build_profile, summary_table, write_profile

    labels, thresholds = _model_thresholds(_settings(ctx), version, threshold_profile)
    try:
        result = build_profile(scored, labels, thresholds, by=by, id_field=id_field,
                               text_field=text_field)
    except ProfileError as exc:
        raise Failure(str(exc)) from None
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
    Written in the labels/ format; correct `labels`, then move the lines into labels/train/."""
    from .labelset import read_labels
    from .profile import ProfileError
    from .suggest import suggest as pick
    from .suggest import write_suggestions

    settings = _settings(ctx)
    labels, thresholds = _model_thresholds(settings, version, None)
    existing = read_labels(settings.labels_dir)
    try:
        rows = pick(scored, labels, thresholds, count, [p.text for p in existing.passages],
                    existing.taxonomy.registers, text_field=text_field, id_field=id_field,
                    min_words=existing.taxonomy.min_words,
                    max_words=existing.taxonomy.max_words)
    except ProfileError as exc:
        raise Failure(str(exc)) from None
    write_suggestions(rows, output)
    click.echo(f"{len(rows)} passage(s) suggested"
               + (f" in {output}" if output and output != "-" else ""), err=True)


# --- models -------------------------------------------------------------------------------

@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx):
    """List model versions with their metrics; `models use VERSION` switches LATEST."""
    if ctx.invoked_subcommand is None:
        from .artifact import list_versions

        rows = list_versions(_settings(ctx).models_dir)
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
    from .artifact import ArtifactError, set_latest

    try:
        set_latest(_settings(ctx).models_dir, version)
    except ArtifactError as exc:
        raise Failure(str(exc)) from None
    click.echo(f"LATEST -> {version}")


# --- serve --------------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--model", "version", default=None, help="pin a version (default: follow LATEST)")
@click.pass_context
def serve(ctx, host, port, version):
    """Serve the HTTP API with BentoML (analytics and model-hub access off)."""
    from .artifact import ArtifactError, load_model

    settings = _settings(ctx)
    try:
        load_model(settings.models_dir, version)
    except ArtifactError as exc:
        raise Failure(str(exc)) from None
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TROPES_MODELS_DIR=str(settings.models_dir),
               TROPES_ENCODER=settings.encoder, TROPES_PRECISION=settings.precision)
    if version:
        env["TROPES_MODEL_VERSION"] = version
    bentoml = Path(sys.executable).with_name("bentoml")
    root = Path(__file__).resolve().parent.parent
    args = [str(bentoml), "serve", "service.service:Tropes", "--host", host,
            "--port", str(port), "--working-dir", str(root)]
    os.execve(args[0], args, env)
