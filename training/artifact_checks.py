"""Every check a model version must pass before it may serve: model.json's fields have the
types the runtime uses, and the weights are finite real arrays of shapes that fit together.
A failure is an ArtifactError naming the version and the field, never another exception."""

from __future__ import annotations

import json
import math
from numbers import Real

import numpy as np

from .artifact import ArtifactError

# trained weights are within +-100; past this float32 sums can reach inf - inf = NaN
MAX_WEIGHT = 1e6


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_meta(meta: dict, version: str) -> None:
    """model.json's fields that loading, serving and `tropes models` read."""

    def bad(where: str, why: str):
        field = f" '{where}'" if where else ""
        return ArtifactError(f"model {version}: model.json{field} {why}")

    try:  # Python reads NaN and Infinity, but /model (JSON) could then not answer
        json.dumps(meta, allow_nan=False)
    except ValueError:
        raise bad("", "holds NaN or Infinity, which JSON does not allow") from None
    files = meta.get("files")
    if not isinstance(files, dict) or not isinstance(files.get("weights.npz"), str):
        raise bad("files", "must be an object giving the sha256 of weights.npz")
    check_labels(meta.get("labels"), bad)
    encoder = meta.get("encoder", {})
    if not isinstance(encoder, dict):
        raise bad("encoder", "must be an object naming the encoder and its dim")
    if "dim" in encoder and not _count(encoder["dim"]):
        raise bad("encoder.dim", f"must be a positive integer, not {encoder.get('dim')!r}")
    if "max_tokens" in encoder and not _count(encoder["max_tokens"]):
        raise bad("encoder.max_tokens", "must be a positive integer")
    for key in ("package", "package_version", "weights_sha256", "precision", "model"):
        if key in encoder and not isinstance(encoder[key], str):
            raise bad(f"encoder.{key}", "must be a string")
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict):
        raise bad("metrics", "must be an object")
    for split in ("test", "cv"):  # `tropes models` prints these
        values = metrics.get(split, {})
        if not isinstance(values, dict):
            raise bad(f"metrics.{split}", "must be an object")
        for key in ("macro_f1", "micro_f1"):
            if key in values and not _number(values[key]):
                raise bad(f"metrics.{split}.{key}", "must be a finite number")
    if "created" in meta and not isinstance(meta["created"], str):
        raise bad("created", "must be a string")


def check_labels(entries, bad) -> None:
    if not isinstance(entries, list) or not entries:
        raise bad("labels", "must be a non-empty list")
    profiles = None
    for i, entry in enumerate(entries):
        where = f"labels[{i}]"
        if not isinstance(entry, dict):
            raise bad(where, "must be an object")
        for key in ("id", "group"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise bad(f"{where}.{key}", "must be a non-empty string")
        thresholds = entry.get("thresholds")
        if not isinstance(thresholds, dict) or not thresholds:
            raise bad(f"{where}.thresholds", "must be an object of profile: threshold")
        for name, value in thresholds.items():
            if not _number(value) or not 0.0 <= value <= 1.0:
                raise bad(f"{where}.thresholds.{name}", f"must be a number in [0, 1], "
                          f"not {value!r}")
        if profiles is not None and set(thresholds) != profiles:
            raise bad(f"{where}.thresholds", f"has profiles {sorted(thresholds)}, the first "
                      f"label {sorted(profiles)}")
        profiles = set(thresholds)
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise bad("labels", "repeats a label id")


def check_weights(version: str, arrays: dict, labels: int, dim: int | None) -> None:
    """coef (rows x features), intercept (rows), prototypes (n x dim), where rows are the
    labels and groups and features = dim + n: finite real numbers throughout."""
    for name in ("coef", "intercept", "prototypes"):
        array = arrays[name]
        if array.dtype.kind not in "fiu":
            raise ArtifactError(f"model {version}: weights.npz {name} holds {array.dtype}, "
                                "not real numbers")
        if not np.isfinite(array).all():
            raise ArtifactError(f"model {version}: weights.npz {name} holds NaN or infinite "
                                "values")
        if array.size and np.abs(array).max() > MAX_WEIGHT:
            raise ArtifactError(f"model {version}: weights.npz {name} holds values beyond "
                                f"+-{MAX_WEIGHT:g}; scores would overflow to NaN")
    coef, intercept, prototypes = arrays["coef"], arrays["intercept"], arrays["prototypes"]
    if prototypes.ndim == 2 and dim is None:
        dim = prototypes.shape[1]
    if prototypes.ndim != 2 or prototypes.shape[1] != dim:
        raise ArtifactError(f"model {version}: weights.npz prototypes have shape "
                            f"{prototypes.shape}; expected (n, {dim}) for the encoder's dim")
    features = dim + prototypes.shape[0]
    if coef.shape != (labels, features):
        raise ArtifactError(f"model {version}: weights.npz coef has shape {coef.shape}; "
                            f"expected ({labels}, {features}) for {labels} labels and {dim} + "
                            f"{prototypes.shape[0]} features")
    if intercept.shape != (labels,):
        raise ArtifactError(f"model {version}: weights.npz intercept has shape "
                            f"{intercept.shape}; expected ({labels},)")


def check_stage_section(section, files, version: str, name: str, kind: str, file: str):
    """What every cascade stage's model.json section has: an object of this kind, its
    arrays' file listed in 'files' with the same sha256, a threshold in [0, 1]. Returns the
    error maker for the section's own fields."""
    def bad(where: str, why: str):
        return ArtifactError(f"model {version}: model.json '{name}{where}' {why}")

    if not isinstance(section, dict):
        raise bad("", "must be an object")
    if section.get("kind") != kind:
        raise bad(".kind", f"must be {kind!r}, not {section.get('kind')!r}")
    if section.get("file") != file:
        raise bad(".file", f"must be {file!r}")
    sha = section.get("sha256")
    if not isinstance(sha, str) or not isinstance(files, dict) or files.get(file) != sha:
        raise bad(".sha256", f"must be a string that 'files' lists for {file}")
    threshold = section.get("threshold")
    if not _number(threshold) or not 0.0 <= threshold <= 1.0:
        raise bad(".threshold", f"must be a number in [0, 1], not {threshold!r}")
    return bad


def check_prefilter_meta(section, files, version: str) -> None:
    """model.json's `prefilter` (format 3): the kind, the hashing the vectorizer is rebuilt
    from (exactly the parameters this tropes knows), the threshold and the file's sha256."""
    from .prefilter import FILE, KIND

    bad = check_stage_section(section, files, version, "prefilter", KIND, FILE)
    check_hashing(section.get("hashing"), bad)
    tokens = section.get("tokens")
    if tokens is not None and (not isinstance(tokens, dict) or not _count(
            tokens.get("vocab_size"))):
        raise bad(".tokens", "must be null or an object with a positive vocab_size")
    if not isinstance(section.get("cv", {}), dict):
        raise bad(".cv", "must be an object")


def check_prefilter_arrays(arrays: dict, section: dict, version: str) -> None:
    """prefilter.npz: ngram_coef [n_features], intercept [1] and, when model.json names a
    vocabulary, token_weights [vocab]: finite real floats within MAX_WEIGHT."""
    from .prefilter import FILE

    expected = {"ngram_coef": (section["hashing"]["n_features"],), "intercept": (1,)}
    if section.get("tokens") is not None:
        expected["token_weights"] = (section["tokens"]["vocab_size"],)
    check_stage_arrays(arrays, expected, FILE, version)


def check_stage_arrays(arrays: dict, expected: dict, file: str, version: str) -> None:
    """A cascade stage's .npz: exactly the expected arrays, each of its expected shape,
    finite real floats within MAX_WEIGHT."""
    if set(arrays) != set(expected):
        raise ArtifactError(f"model {version}: {file} holds {sorted(arrays)}; expected "
                            f"{sorted(expected)}")
    for name, shape in expected.items():
        array = arrays[name]
        if array.dtype.kind != "f":
            raise ArtifactError(f"model {version}: {file} {name} holds {array.dtype}, not "
                                "floats")
        if array.shape != shape:
            raise ArtifactError(f"model {version}: {file} {name} has shape {array.shape}; "
                                f"expected {shape}")
        if not np.isfinite(array).all():
            raise ArtifactError(f"model {version}: {file} {name} holds NaN or infinite values")
        if array.size and np.abs(array).max() > MAX_WEIGHT:
            raise ArtifactError(f"model {version}: {file} {name} holds values beyond "
                                f"+-{MAX_WEIGHT:g}")


def check_early_exit_meta(section, files, version: str, dim: int | None) -> None:
    """model.json's `early_exit` (format 4): kind, file and sha256, a layer inside the
    encoder, its dimension, a threshold in [0, 1]."""
    from .early_exit import FILE, KIND

    bad = check_stage_section(section, files, version, "early_exit", KIND, FILE)
    if not _count(section.get("layer")) or section["layer"] > 64:
        raise bad(".layer", f"must be a positive integer, not {section.get('layer')!r}")
    if not _count(section.get("dim")) or (dim is not None and section["dim"] != dim):
        raise bad(".dim", f"must be the encoder's dimension {dim}, not {section.get('dim')!r}")
    if not isinstance(section.get("cv", {}), dict):
        raise bad(".cv", "must be an object")


def check_early_exit_arrays(arrays: dict, section: dict, version: str) -> None:
    """early_exit.npz: coef [dim] and intercept [1]."""
    from .early_exit import FILE

    check_stage_arrays(arrays, {"coef": (section["dim"],), "intercept": (1,)}, FILE, version)


def check_hashing(hashing, bad) -> None:
    """The prefilter's vectorizer parameters: exactly the keys this tropes rebuilds it from."""
    from .prefilter import HASHING, MAX_FEATURES

    if not isinstance(hashing, dict) or set(hashing) != set(HASHING):
        raise bad(".hashing", f"must be an object with exactly {sorted(HASHING)}")
    n = hashing["n_features"]
    if not _count(n) or n > MAX_FEATURES:
        raise bad(".hashing.n_features", f"must be a positive integer up to {MAX_FEATURES}")
    grams = hashing["ngram_range"]
    if not (isinstance(grams, list) and len(grams) == 2 and all(_count(g) for g in grams)
            and grams[0] <= grams[1] <= 5):
        raise bad(".hashing.ngram_range", "must be [low, high] with 1 <= low <= high <= 5")
    for key in ("analyzer", "token_pattern", "norm", "hash"):
        if hashing[key] != HASHING[key]:  # other vectorizers would need other code to read
            raise bad(f".hashing.{key}", f"must be {HASHING[key]!r}")
    for key in ("lowercase", "alternate_sign", "binary"):
        if not isinstance(hashing[key], bool):
            raise bad(f".hashing.{key}", "must be true or false")
