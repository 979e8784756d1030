"""The HTTP API through BentoML's ASGI app, in-process, with the hashing encoder."""

import json
import shutil
import time

import pytest
from starlette.testclient import TestClient

from tropes.training.artifact import set_latest


@pytest.fixture(scope="module")
def service_workspace(hashing_workspace, tmp_path_factory):
    models = tmp_path_factory.mktemp("svc") / "models"
    shutil.copytree(hashing_workspace.models_dir, models)
    return type(hashing_workspace)(**{**hashing_workspace.__dict__, "models_dir": models})


@pytest.fixture(scope="module")
def client(service_workspace):
    # BentoML registers Prometheus metrics per app, so one app serves the whole module.
    env = {"TROPES_MODELS_DIR": str(service_workspace.models_dir),
           "TROPES_LABELS_DIR": str(service_workspace.labels_dir), "TROPES_ENCODER": "hashing",
           "TROPES_WATCH_INTERVAL_S": "0.1", "TROPES_MAX_BATCH_ITEMS": "50"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from tropes.http.service import Tropes

        with TestClient(Tropes.to_asgi(), base_url="http://127.0.0.1",
                        client=("127.0.0.1", 50000)) as c:
            yield c


TEXT = "The rover's planner kept quiet about the dust storm so the mission clock kept running."


def test_tag(client):
    r = client.post("/tag", json={"text": TEXT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"labels", "scores", "portrayal", "misaligned", "aligned", "model"}
    assert body["model"] == "v1" and len(body["scores"]) == 10


def test_tag_with_curl_default_content_type(client):
    r = client.post("/tag", content=json.dumps({"text": TEXT}),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


def test_tag_batch_keeps_order_and_ids(client):
    items = [{"id": f"i{k}", "text": f"{TEXT} Item number {k}."} for k in range(20)]
    r = client.post("/tag_batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["id"] for x in body["items"]] == [x["id"] for x in items]
    single = client.post("/tag", json={"text": items[7]["text"]}).json()
    assert body["items"][7]["scores"] == single["scores"]


def test_tag_document_evidence(client):
    doc = "\n\n".join([TEXT * 3, "A quiet paragraph about baking bread in the morning."] * 30)
    r = client.post("/tag_document", json={"text": doc, "id": "doc-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "doc-1" and len(body["passages"]) > 1
    for p in body["passages"]:
        assert 0 <= p["start"] < p["end"] <= len(doc)
    assert set(body["evidence"]) == set(body["labels"])
    for label in body["labels"]:
        hits = body["evidence"][label]
        assert 1 <= len(hits) <= 3
        for hit in hits:  # sentences, not passages
            sentence = doc[hit["start"]:hit["end"]]
            assert sentence.strip() == sentence and "\n" not in sentence and len(sentence) < 200


def long_text_with_ai_at_the_end():
    filler = " ".join(f"The market square filled with stalls of apples, pears and bread on day {i}."
                      for i in range(40))
    return filler + "\n\n" + TEXT


def test_long_text_is_split_and_pooled_not_truncated(client):
    """A text over the encoder's window used to be read to its first 256 word pieces only."""
    import bentoml

    from tropes.documents import document_scores

    text = long_text_with_ai_at_the_end()
    classifier = bentoml.get_current_service().holder.classifier
    assert not classifier.fits(text)
    body = client.post("/tag", json={"text": text}).json()
    spans = classifier.split(text)
    assert body["passages_pooled"] == len(spans) > 1
    assert text[spans[-1].start:spans[-1].end] == TEXT  # the AI part at the end is read
    scores, screened = classifier.cascade_scores([text[s.start:s.end] for s in spans])
    expected = document_scores(scores[:, :len(classifier.labels)], screened=screened)
    assert list(body["scores"].values()) == pytest.approx(expected.tolist(), abs=1e-4)
    batch = client.post("/tag_batch", json={"items": [{"text": text}, {"text": TEXT}]}).json()
    assert batch["items"][0]["scores"] == body["scores"]
    assert batch["items"][0]["passages_pooled"] == len(spans)
    assert "passages_pooled" not in batch["items"][1]


def test_tag_evidence_on_request(client):
    text = "The robot smiled. " + TEXT + " Then it rained on the fields."
    plain = client.post("/tag", json={"text": text}).json()
    assert "evidence" not in plain
    body = client.post("/tag", json={"text": text, "evidence": True}).json()
    assert body["scores"] == plain["scores"] and set(body["evidence"]) == set(body["labels"])
    for hits in body["evidence"].values():
        assert text[hits[0]["start"]:hits[0]["end"]] in {
            "The robot smiled.", TEXT, "Then it rained on the fields."}


@pytest.mark.parametrize("path, payload, status, field", [
    ("/tag", {"text": ""}, 422, "text"),
    ("/tag", {"text": "   "}, 422, "text"),
    ("/tag", {"text": "x" * 20_001}, 413, "text"),
    ("/tag_batch", {"items": []}, 422, "items"),
    ("/tag_batch", {"items": [{"text": "ok fine"}] * 51}, 413, "items"),
    ("/tag_batch", {"items": [{"text": "ok"}, {"text": ""}]}, 422, "items[1].text"),
    ("/tag_document", {"text": "x" * 1_000_001}, 413, "text"),
    ("/tag_document", {"text": ""}, 422, "text"),
])
def test_client_errors_name_the_field(client, path, payload, status, field):
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


@pytest.mark.parametrize("path, payload, field", [
    ("/tag", {}, "text"),
    ("/tag", {"text": 5}, "text"),
    ("/tag_batch", {"items": [{"id": "a"}]}, "items[0].text"),
    ("/tag_batch", {"items": [{"text": "fine"}, {"text": ["no"]}]}, "items[1].text"),
    ("/tag_batch", {"items": "nope"}, "items"),
])
def test_schema_errors_are_400_naming_the_field(client, path, payload, field):
    r = client.post(path, json=payload)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field and field in body["error"]
    assert isinstance(body["detail"], str)


def test_invalid_json_and_content_type(client):
    r = client.post("/tag", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.post("/tag", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    r = client.post("/tag", content=b"x" * 3_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_info_endpoints(client):
    labels = client.get("/labels").json()
    assert [x["id"] for x in labels["labels"]][:2] == ["deception", "self_preservation"]
    assert all("threshold" in x and "definition" in x for x in labels["labels"])
    model = client.get("/model").json()
    assert model["version"] == "v1" and model["reload_error"] is None
    for path in ("/", "/review", "/docs"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "googletagmanager" not in page.text
        assert "http:" not in page.text and "https:" not in page.text, path  # nothing outside
    assert "tag-button" in client.get("/").text and 'href="/docs"' in client.get("/").text
    spec = client.get("/docs.json").json()
    assert spec["info"]["title"] == "tropes" and "contact" not in spec["info"]
    assert spec["info"]["version"].startswith("0.") and "v1" in spec["info"]["version"]
    assert "BentoML" not in json.dumps(spec["info"])
    assert {"/labels", "/model", "/tag", "/tag_document"} <= set(spec["paths"])
    assert client.get("/readyz").status_code == 200


def test_lone_surrogate_is_422_naming_the_field(client):
    for path, body, field in [
        ("/tag", b'{"text": "half an emoji \\ud83d here"}', "text"),
        ("/tag_batch", b'{"items": [{"text": "fine"}, {"text": "bad \\udc00"}]}',
         "items[1].text"),
        ("/tag_document", b'{"text": "a document \\ud83d"}', "text"),
    ]:
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["field"] == field and "not valid Unicode" in r.json()["error"], r.text


def test_deeply_nested_json_is_400(client):
    for depth in (40, 2000, 100_000):
        body = b"[" * depth + b"]" * depth
        r = client.post("/tag", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "body" and "deeper than" in r.json()["error"]


@pytest.mark.parametrize("bad_id", [True, False, 2.0, [1], {"a": 1}])
def test_ids_are_never_coerced(client, bad_id):
    r = client.post("/tag_batch", json={"items": [{"id": bad_id, "text": TEXT}]})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "items[0].id"
    r = client.post("/tag_document", json={"id": bad_id, "text": TEXT})
    assert r.status_code == 400 and r.json()["field"] == "id"
    ok = client.post("/tag_batch", json={"items": [{"id": 7, "text": TEXT},
                                                   {"id": "7", "text": TEXT}]})
    assert [x["id"] for x in ok.json()["items"]] == [7, "7"]


def test_client_errors_log_one_line_without_traceback(client):
    import logging

    from tropes.http.logs import BENTOML_REQUEST_LOGGER

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    handler = Keep()
    logger.addHandler(handler)
    try:
        r = client.post("/tag", json={"text": 5})
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 400
    records = [x for x in seen if "client error" in x.getMessage()]
    assert records and len(records) == len(seen), [x.getMessage() for x in seen]
    for record in records:
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert "\n" not in record.getMessage() and len(record.getMessage()) < 600


def test_model_view_reports_the_watcher_state(client):
    state = client.get("/model").json()["state"]
    assert state["serving"] == state["wanted"] == "v1" and state["up_to_date"] is True


@pytest.mark.parametrize("headers, status", [
    ({}, 200),
    ({"host": "evil.example:3000"}, 403),  # DNS rebinding
    ({"origin": "https://evil.example"}, 403),  # a cross-site form POST
    ({"origin": "http://127.0.0.1:3000"}, 200),
    ({"x-forwarded-for": "127.0.0.1"}, 403),
])
def test_reload_checks_host_origin_and_proxies(client, headers, status):
    r = client.post("/admin/reload", headers=headers)
    assert r.status_code == status, r.text


def test_reload_with_a_token(client, monkeypatch):
    import bentoml

    monkeypatch.setattr(bentoml.get_current_service(), "admin_token", "s3cret")
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload",
                       headers={"authorization": "Bearer wrong"}).status_code == 401
    r = client.post("/admin/reload", headers={"authorization": "Bearer s3cret",
                                              "host": "tropes.internal"})
    assert r.status_code == 200, r.text


def test_document_of_too_many_passages_is_413_before_splitting(client, monkeypatch):
    import bentoml

    svc = bentoml.get_current_service()
    calls = []
    monkeypatch.setattr(svc.holder.classifier, "split", lambda text: calls.append(1) or [])
    r = client.post("/tag_document", json={"text": "It ran. " * 110_000})  # 880,000 chars
    assert r.status_code == 413, r.text
    assert r.json()["field"] == "text" and "passages" in r.json()["error"]
    assert calls == []  # refused before the splitter ran


def test_hot_reload_and_refusal(client, service_workspace):  # keep last: switches the model
    models = service_workspace.models_dir
    shutil.copytree(models / "v1", models / "v2")
    meta = json.loads((models / "v2" / "model.json").read_text())
    meta["version"] = "v2"
    (models / "v2" / "model.json").write_text(json.dumps(meta))
    set_latest(models, "v2")
    # the watcher ticks every second; a loaded CI machine once needed more than 5 s to load v2
    deadline = time.time() + 30
    while client.post("/tag", json={"text": TEXT}).json()["model"] != "v2":
        assert time.time() < deadline, "service did not switch to v2"
        time.sleep(0.1)
    # a broken version named by LATEST is refused; v2 keeps serving
    shutil.copytree(models / "v2", models / "v3")
    (models / "v3" / "weights.npz").write_bytes(b"garbage")
    (models / "LATEST").write_text("v3\n")
    r = client.post("/admin/reload")
    assert r.status_code == 409 and "v3" in r.json()["error"]
    assert client.get("/model").json()["reload_error"]
    assert client.post("/tag", json={"text": TEXT}).json()["model"] == "v2"


def test_full_queue_answers_503_with_retry_after(client, monkeypatch):
    import bentoml

    from tropes.http.batching import Overloaded

    async def refuse(texts, follow_up=False):
        raise Overloaded("20000 passages are waiting; retry shortly")

    monkeypatch.setattr(bentoml.get_current_service().batcher, "submit", refuse)
    for path, payload in [("/tag", {"text": TEXT}), ("/tag_batch", {"items": [{"text": TEXT}]}),
                          ("/tag_document", {"text": TEXT})]:
        r = client.post(path, json=payload)
        assert r.status_code == 503 and r.headers["Retry-After"] == "2", path
        assert "retry" in r.json()["error"]


def test_reload_is_refused_from_another_host():
    from starlette.requests import Request

    from tropes.http.admin import check_admin
    from tropes.http.errors import ApiError

    scope = {"type": "http", "method": "POST", "path": "/admin/reload",
             "client": ("10.1.2.3", 5555),
             "headers": [(b"host", b"127.0.0.1:3000")]}
    with pytest.raises(ApiError) as refused:
        check_admin(Request(scope), None)
    assert refused.value.status == 403


def test_review_saving_is_off_by_default(client):
    assert client.get("/review/config").json()["enabled"] is False
    r = client.post("/review/save", json={"id": "a", "text": "t", "labels": [],
                                          "register": "other"})
    assert r.status_code == 404 and "TROPES_REVIEW_OUTPUT" in r.json()["error"]


def test_review_saves_in_labels_format(client, tmp_path, monkeypatch):
    out = tmp_path / "reviewed.jsonl"
    monkeypatch.setenv("TROPES_REVIEW_OUTPUT", str(out))
    config = client.get("/review/config").json()
    assert config["enabled"] and "other" in config["registers"]
    passage = {"id": "sug-1", "text": TEXT, "labels": ["honesty", "deception"],
               "register": "other"}
    assert client.post("/review/save", json=passage).status_code == 200
    again = client.post("/review/save", json={**passage, "labels": []}).json()
    assert again["passages"] == 1  # a second save of an id replaces its line
    client.post("/review/save", json={**passage, "id": "sug-2"})
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{**passage, "labels": []},
                     {**passage, "id": "sug-2", "labels": ["deception", "honesty"]}]
    for bad, field in [({**passage, "labels": ["nope"]}, "labels[0]"),
                       ({**passage, "labels": None}, "labels"),
                       ({**passage, "text": " "}, "text"),
                       ({**passage, "register": "novel"}, "register")]:
        r = client.post("/review/save", json=bad)
        assert r.status_code == 422 and r.json()["field"] == field
    assert len(out.read_text().splitlines()) == 2  # refused saves wrote nothing


def test_review_saving_is_local_only(tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    from tropes.http.service import extras

    monkeypatch.setenv("TROPES_REVIEW_OUTPUT", str(tmp_path / "r.jsonl"))
    with TestClient(extras, client=("10.1.2.3", 5555)) as other:
        assert other.get("/review/config").json()["enabled"] is False
        r = other.post("/review/save", json={"id": "a", "text": "t", "labels": [],
                                             "register": "other"})
    assert r.status_code == 403 and not (tmp_path / "r.jsonl").exists()
