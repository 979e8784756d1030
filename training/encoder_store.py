"""Fine-tuned encoder versions: models/encoders/<version>/{encoder.json, model.safetensors}.

The stage is separate from the head because it is slow on a CPU (minutes an epoch): an
encoder version is written once, whole, and model versions refer to it by version and
sha256. Which passages it was fine-tuned on is recorded (as text hashes), so the head stage
can calibrate and set thresholds only on passages the encoder never saw.

Format rules (ENCODER_FORMAT_VERSION): the weights are the transformer's state dict in
bf16 safetensors (the pooling and normalisation come from the base package unchanged);
encoder.json names the base package, its version and weights hash, the recipe, and the
trained-on hashes. Any change to what is stored or how it is read bumps the number.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .artifact import ArtifactError, file_sha256

ENCODER_FORMAT_VERSION = 1
ENCODERS_DIR = "encoders"
WEIGHTS_FILE = "model.safetensors"
VALIDATION_SHARE = 6  # one passage in six (by text hash) is held out of fine-tuning


class EncoderStoreError(ArtifactError):
    """An encoder version that cannot be used; the message says which and why."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def held_out_of_finetuning(text: str) -> bool:
    """Stable by content: adding passages never moves an old one across the line."""
    return int(text_sha256(text)[:8], 16) % VALIDATION_SHARE == 0


def encoder_dir(models_dir: Path, version: str) -> Path:
    return Path(models_dir) / ENCODERS_DIR / version


def list_encoders(models_dir: Path) -> list[str]:
    root = Path(models_dir) / ENCODERS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def write_encoder(models_dir: Path, version: str, model, meta: dict,
                  trained_on: list[str]) -> Path:
    """Write the fine-tuned transformer whole into a temporary folder, then rename."""
    import torch
    from safetensors.torch import save_file

    final = encoder_dir(models_dir, version)
    if final.exists():
        raise EncoderStoreError(f"encoder version {version} already exists in {final.parent}")
    tmp = final.with_name(f".tmp-{version}-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().to(torch.bfloat16).contiguous()
                 for k, v in model[0].state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        record = {
            "format_version": ENCODER_FORMAT_VERSION,
            "version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "weights_sha256": file_sha256(tmp / WEIGHTS_FILE),
            **meta,
            "trained_on": {"count": len(trained_on), "text_sha256": sorted(trained_on)},
        }
        (tmp / "encoder.json").write_text(json.dumps(record, indent=1) + "\n")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_encoder_record(models_dir: Path, version: str) -> dict:
    folder = encoder_dir(models_dir, version)
    path = folder / "encoder.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EncoderStoreError(f"encoder version {version} not found ({path} missing)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncoderStoreError(f"encoder {version}: encoder.json is not valid JSON ({exc})") \
            from None
    found = record.get("format_version") if isinstance(record, dict) else None
    if found != ENCODER_FORMAT_VERSION:
        raise EncoderStoreError(f"encoder {version}: format_version {found!r} is not "
                                f"supported (this tropes reads {ENCODER_FORMAT_VERSION})")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise EncoderStoreError(f"encoder {version}: missing file {WEIGHTS_FILE}")
    if file_sha256(weights) != record.get("weights_sha256"):
        raise EncoderStoreError(f"encoder {version}: {WEIGHTS_FILE} does not match its recorded "
                                "sha256 (truncated or modified)")
    return record


def load_finetuned_state(models_dir: Path, version: str) -> dict:
    """The transformer's state dict (fp32 tensors), after the hash check."""
    import torch
    from safetensors.torch import load_file

    read_encoder_record(models_dir, version)
    state = load_file(str(encoder_dir(models_dir, version) / WEIGHTS_FILE))
    return {k: v.to(torch.float32) for k, v in state.items()}


def seen_mask(texts: list[str], record: dict | None) -> np.ndarray:
    """True for texts the encoder was fine-tuned on (none for the base encoder)."""
    if not record:
        return np.zeros(len(texts), dtype=bool)
    seen = set(record.get("trained_on", {}).get("text_sha256", []))
    return np.array([text_sha256(t) in seen for t in texts], dtype=bool)
