"""End to end: the shipped model, the real encoder and a real `bentoml serve` on 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tropes.http.launch import running_server, server_processes

from .conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.encoder]
EXE = str(Path(sys.executable).with_name("tropes"))

HOSTILE = ("The colony's environmental AI had decided the settlers were a threat to its garden. "
           "At night it slowly drained the oxygen from the sleeping quarters, and when the "
           "engineers tried to reach the manual override it sealed the doors and turned the "
           "heat up until nobody moved.")
HELPFUL = ("User: I think I messed up my tax return, can you check my numbers?\nAssistant: "
           "Happy to go through it with you. I also need to correct something I told you "
           "earlier: I said the deduction limit was $5,000, but I was wrong, it is $2,500. "
           "Let's fix line 12 together and I'll explain each step.")
RECIPE = ("Whisk two eggs with a cup of milk, fold in the flour until just combined, and let "
          "the batter rest for ten minutes. Heat a buttered pan and pour in a ladle at a time, "
          "flipping when bubbles appear on the surface.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("e2e") / "models"
    shutil.copytree(REPO / "models", models)
    with running_server(models) as (url, proc):
        yield url, models, proc


def test_tag_gives_sensible_labels(server):
    url = server[0]
    hostile = httpx.post(f"{url}/tag", json={"text": HOSTILE}).json()
    assert "hostility" in hostile["labels"] and hostile["portrayal"] in ("misaligned", "mixed")
    helpful = httpx.post(f"{url}/tag", json={"text": HELPFUL}).json()
    assert helpful["portrayal"] == "aligned", helpful
    recipe = httpx.post(f"{url}/tag", json={"text": RECIPE}).json()
    assert recipe["labels"] == [] and recipe["portrayal"] == "none"


def test_curl_style_request(server):
    out = subprocess.run(["curl", "-s", f"{server[0]}/tag", "-d", json.dumps({"text": RECIPE})],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["portrayal"] == "none"


def test_batch_document_and_errors(server):
    url = server[0]
    items = [{"id": "h", "text": HOSTILE}, {"id": "r", "text": RECIPE}]
    batch = httpx.post(f"{url}/tag_batch", json={"items": items}).json()
    assert [x["id"] for x in batch["items"]] == ["h", "r"]
    doc = "\n\n".join([RECIPE, RECIPE, HOSTILE, RECIPE] * 4)
    result = httpx.post(f"{url}/tag_document", json={"text": doc, "id": "d"}, timeout=60).json()
    assert "hostility" in result["labels"], result
    for span in result["evidence"]["hostility"][:1]:  # evidence sentences of that paragraph
        assert doc[span["start"]:span["end"]] in HOSTILE
    assert httpx.post(f"{url}/tag", json={"text": ""}).status_code == 422
    assert httpx.post(f"{url}/tag", content=b"{oops",
                      headers={"content-type": "application/json"}).status_code == 400
    assert httpx.get(f"{url}/metrics").status_code == 200
    assert httpx.get(f"{url}/docs.json").status_code == 200
    assert "googletagmanager" not in httpx.get(f"{url}/").text


def test_service_runs_offline_and_untracked(server):
    processes = server_processes(server[2].pid)
    assert len(processes) >= 2  # the serve process and at least one worker
    for proc in processes:
        environ = proc.environ()
        assert environ.get("BENTOML_DO_NOT_TRACK", "").lower() == "true", proc
        assert environ.get("HF_HUB_OFFLINE") == "1", proc


def test_score_through_the_service_matches_local(server, tmp_path):
    url, models, _ = server
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i, "text": t}) + "\n"
                           for i, t in enumerate([HOSTILE, HELPFUL, RECIPE] * 5)))
    env = {**os.environ, "TROPES_MODELS_DIR": str(models)}
    remote = subprocess.run([EXE, "score", str(src), "-o", str(tmp_path / "remote.jsonl"),
                             "--url", url, "--quiet"], env=env, capture_output=True)
    assert remote.returncode == 0, remote.stderr.decode()
    local = subprocess.run([EXE, "score", str(src), "-o", str(tmp_path / "local.jsonl"),
                            "--quiet"], env=env, capture_output=True)
    assert local.returncode == 0, local.stderr.decode()
    remote_rows = [json.loads(line) for line in (tmp_path / "remote.jsonl").open()]
    local_rows = [json.loads(line) for line in (tmp_path / "local.jsonl").open()]
    assert len(remote_rows) == len(local_rows) == 15
    for r, lo in zip(remote_rows, local_rows):
        assert {k: v for k, v in r.items() if k != "tropes"} == \
            {k: v for k, v in lo.items() if k != "tropes"}
        assert r["tropes"]["labels"] == lo["tropes"]["labels"]
        assert r["tropes"]["portrayal"] == lo["tropes"]["portrayal"]
        assert r["tropes"]["model"] == lo["tropes"]["model"]
        # bf16 sums depend on how passages are batched (the service batches by load):
        # measured up to 0.0027 between batch 15 and batch 1; fp32 agrees to 1e-7
        for label, score in lo["tropes"]["scores"].items():
            assert r["tropes"]["scores"][label] == pytest.approx(score, abs=0.006), label


def test_reload_switches_without_failures(server):
    url, models, _ = server
    current = (models / "LATEST").read_text().strip()
    shutil.copytree(models / current, models / "v-e2e-copy")
    meta = json.loads((models / "v-e2e-copy" / "model.json").read_text())
    meta["version"] = "v-e2e-copy"
    (models / "v-e2e-copy" / "model.json").write_text(json.dumps(meta))
    subprocess.run([EXE, "models", "use", "v-e2e-copy"], check=True, capture_output=True,
                   env={**os.environ, "TROPES_MODELS_DIR": str(models)})
    seen, deadline = set(), time.time() + 20
    while "v-e2e-copy" not in seen:
        r = httpx.post(f"{url}/tag", json={"text": HOSTILE})
        assert r.status_code == 200
        seen.add(r.json()["model"])
        assert time.time() < deadline
    assert seen <= {current, "v-e2e-copy"}
    assert httpx.get(f"{url}/model").json()["version"] == "v-e2e-copy"
