"""Cold training time on the full corpus, then the warm retrain after ten passages are added,
with the shipped fine-tuned encoder (head, prefilter and early exit; no fine-tuning).

The ten "new" passages are the last ten lines of one train file: they are held back for the
cold run and put back for the warm one, so the warm run embeds exactly ten passages.
Run: .venv/bin/python bench/train_time.py"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tropes.training.settings import load_settings  # noqa: E402
from tropes.training.train import train  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = tmp / "labels"
        shutil.copytree(REPO_ROOT / "labels", labels)
        target = max((labels / "train").glob("*.jsonl"), key=lambda p: p.stat().st_size)
        lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
        target.write_text("".join(lines[:-10]), encoding="utf-8")
        # the shipped fine-tuned encoder, as `make train` uses it (the newest stored version)
        shutil.copytree(REPO_ROOT / "models" / "encoders", tmp / "models" / "encoders")
        settings = load_settings(labels_dir=labels, models_dir=tmp / "models",
                                 cache_dir=tmp / "cache")
        start = time.perf_counter()
        cold = train(settings, progress=False, version="cold", force=True)
        cold_s = time.perf_counter() - start
        target.write_text("".join(lines), encoding="utf-8")
        start = time.perf_counter()
        warm = train(settings, progress=False, version="warm", force=True)
        warm_s = time.perf_counter() - start
    n = cold.model.meta["training_data"]
    print(f"{'run':<30}{'seconds':>10}{'embedded':>10}")
    print(f"{'cold (empty cache)':<30}{cold_s:>10.1f}{cold.newly_embedded:>10}")
    print(f"{'warm (+10 passages)':<30}{warm_s:>10.1f}{warm.newly_embedded:>10}")
    print(f"warm/cold = {warm_s / cold_s:.2f}; corpus {n['train']} train + {n['test']} test; "
          f"precision {cold.model.meta['encoder']['precision']}")


if __name__ == "__main__":
    main()
