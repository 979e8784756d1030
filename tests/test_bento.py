"""`bentoml build` works offline and packs the service, the shipped model and the taxonomy."""

import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def test_bentoml_build_offline(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    run = subprocess.run([bentoml, "build", str(REPO)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    bentos = list((tmp_path / "home" / "bentos" / "tropes").glob("*/src"))
    assert len(bentos) == 1
    src = bentos[0]
    latest = (REPO / "models" / "LATEST").read_text().strip()
    assert (src / "models" / "LATEST").read_text().strip() == latest
    assert (src / "models" / latest / "weights.npz").is_file()
    assert (src / "service" / "http" / "service.py").is_file()
    assert (src / "labels" / "taxonomy.yaml").is_file()
