"""All settings in one place, built by a function (never at import time).

Every TROPES_* environment variable is read here and nowhere else; the README lists them.
Folders default to the working directory's ./labels and ./models when they exist (a
checkout), else to the copies shipped inside the installed package (read-only use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import TropesError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # checkout root, or site-packages/tropes


class SettingsError(TropesError, ValueError):
    """An environment variable or option that cannot be used; the message names it."""


def shipped_dir(name: str) -> Path:
    """models/ or labels/ as shipped: inside the wheel (tropes/<name>) or the checkout root."""
    inside = PACKAGE_ROOT / name
    if inside.is_dir() and (PACKAGE_ROOT / "__init__.py").exists():
        return inside  # installed wheel: site-packages/tropes/<name>
    return PACKAGE_ROOT / name


def default_dir(name: str) -> Path:
    """./<name> when the working directory has one, else the shipped copy."""
    here = Path.cwd() / name
    return here if here.is_dir() else shipped_dir(name)


@dataclass(frozen=True)
class Limits:
    """Request limits for the service (TROPES_MAX_*)."""

    max_text_chars: int = 20_000
    max_document_chars: int = 1_000_000
    max_batch_items: int = 1_000
    max_body_bytes: int = 2_000_000
    max_queue_passages: int = 20_000
    # 240-token passages: 500 is ~120,000 tokens, a long novel chapter; past it a document
    # would hold the encoder (and the splitter) for many seconds
    max_document_passages: int = 500
    # encoder seconds of queued work (passages x measured seconds per passage) past which
    # new requests get 503 + Retry-After
    max_queue_seconds: float = 10.0
    # a small request (a /tag) is admitted only when it is estimated to start encoding
    # within this many seconds, else 503 + Retry-After, so its latency stays near the
    # unloaded one under any load (0 turns it off); here one passage takes 25-50 ms
    max_wait_seconds: float = 0.1


@dataclass(frozen=True)
class Settings:
    labels_dir: Path
    models_dir: Path
    cache_dir: Path
    encoder: str = "minilm"
    precision: str = "auto"
    # 16 beat 32 on this 2-core CPU (43 vs 38 passages/s fp32) and peaks lower in memory
    batch_size: int = 16
    device: str = "cpu"
    model_version: str | None = None  # pin the service to one version instead of LATEST
    watch_interval_s: float = 1.0
    chunk_rows: int = 256
    # the service's review page saves reviewed passages here (labels/ format); None = off
    review_output: Path | None = None
    limits: Limits = field(default_factory=Limits)
    # POST /admin/reload needs "Authorization: Bearer <token>" when set; unset, only a
    # loopback client naming a loopback Host with no foreign Origin may reload
    admin_token: str | None = field(default=None, repr=False)
    # the cascade: screen passages with the model's prefilter (when it has one) before the
    # encoder; False (TROPES_PREFILTER=0, `tropes --no-prefilter`) encodes every passage
    prefilter: bool = True

    def as_env(self) -> dict[str, str]:
        """The settings as TROPES_* variables, to hand to a child process (tropes serve)."""
        env = {f"TROPES_{k.upper()}": str(v) for k, v in self._flat().items()
               if v is not None}
        return env

    def _flat(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "limits"}
        out.update({f.name: getattr(self.limits, f.name) for f in fields(Limits)})
        return out


def _number(env, name: str, default, kind=int):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"environment variable {name}={raw!r} must be positive")
    return value


def _flag(env, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"environment variable {name}={raw!r} must be 1 or 0 (true/false)")


def load_settings(env: dict | None = None, **overrides) -> Settings:
    """Defaults, then TROPES_* environment variables, then overrides (None = not given)."""
    env = os.environ if env is None else env
    limits = Limits(**{f.name: _number(env, f"TROPES_{f.name.upper()}", f.default,
                                       type(f.default)) for f in fields(Limits)})
    values = dict(
        labels_dir=Path(env.get("TROPES_LABELS_DIR") or default_dir("labels")),
        models_dir=Path(env.get("TROPES_MODELS_DIR") or default_dir("models")),
        cache_dir=Path(env.get("TROPES_CACHE_DIR") or Path.cwd() / ".cache"),
        encoder=env.get("TROPES_ENCODER") or "minilm",
        precision=env.get("TROPES_PRECISION") or "auto",
        batch_size=_number(env, "TROPES_BATCH_SIZE", 16),
        device=env.get("TROPES_DEVICE") or "cpu",
        model_version=env.get("TROPES_MODEL_VERSION") or None,
        watch_interval_s=_number(env, "TROPES_WATCH_INTERVAL_S", 1.0, float),
        chunk_rows=_number(env, "TROPES_CHUNK_ROWS", 256),
        review_output=Path(env["TROPES_REVIEW_OUTPUT"]) if env.get("TROPES_REVIEW_OUTPUT")
        else None,
        limits=limits,
        admin_token=env.get("TROPES_ADMIN_TOKEN") or None,
        prefilter=_flag(env, "TROPES_PREFILTER", True),
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("labels_dir", "models_dir", "cache_dir"):
        values[key] = Path(values[key])
    return Settings(**values)
