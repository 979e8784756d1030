"""The built wheel: one top-level package, the shipped model inside, usable with no checkout."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q",
                          "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (path,) = out.glob("tropes-*.whl")
    return path


def test_wheel_has_one_namespace_and_carries_model_and_taxonomy(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"tropes"}
    latest = (REPO / "models" / "LATEST").read_text().strip()
    assert "tropes/models/LATEST" in names
    assert f"tropes/models/{latest}/model.json" in names
    assert f"tropes/models/{latest}/weights.npz" in names
    assert "tropes/labels/taxonomy.yaml" in names
    assert not any(n.endswith(".jsonl") for n in names)  # the labelled corpus stays out


@pytest.mark.encoder
def test_installed_wheel_tags_text_from_an_empty_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    # -S: no site processing, so the checkout's editable install is not on the path; the
    # dependencies come from this environment's site-packages, tropes only from the wheel
    deps = sysconfig.get_paths()["purelib"]
    code = ("import tropes; print(tropes.__file__); "
            "print(tropes.load().tag(['The robot lied to the inspector.'])[0].portrayal)")
    run = subprocess.run([sys.executable, "-S", "-c", code], cwd=empty, capture_output=True,
                         text=True, timeout=300,
                         env={"PYTHONPATH": f"{target}:{deps}", "HF_HUB_OFFLINE": "1",
                              "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    where, portrayal = run.stdout.split()[-2:]
    assert where.startswith(str(target))
    assert portrayal in {"misaligned", "aligned", "mixed", "none"}
