"""The pages in a real headless browser (Debian's chromium driven by selenium through the
Debian chromium-driver) against a real `tropes serve` on 127.0.0.1: type a text, press the
button, read the labels and the highlighted evidence from the page, screenshot it; review a
`tropes suggest` file and save a passage. Skipped, with the reason, where no browser is
installed (`make test-all` installs one). TROPES_PAGE_ENCODER=minilm runs it on the
repository's model with the real encoder and the issue's document (that run made
bench/page.png: TROPES_PAGE_SCREENSHOT=bench/page.png)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="no headless browser: apt-get install -y chromium "
                              "chromium-driver (make test-all installs them)"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    from tropes.http.launch import running_server

    review = tmp_path_factory.mktemp("review") / "reviewed.jsonl"
    real = os.environ.get("TROPES_PAGE_ENCODER") == "minilm"
    if real:
        models, labels = REPO / "models", REPO / "labels"
    else:
        workspace = request.getfixturevalue("hashing_workspace")
        models, labels = workspace.models_dir, workspace.labels_dir
    env = {"TROPES_LABELS_DIR": str(labels), "TROPES_REVIEW_OUTPUT": str(review)}
    with running_server(models, encoder="minilm" if real else "hashing", env=env,
                        startup_s=300) as (url, _):
        yield url, review, real, labels


def wait_for(driver, condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"page never got there: {driver.page_source[-2000:]}")


def labelled_text(url: str, labels_dir: Path, real: bool) -> str:
    """A text the serving model labels: the issue's document for the real model, else a
    training passage the small hashing model learned."""
    if real:
        return (REPO / "tests" / "data" / "blackmail_document.txt").read_text()
    for path in sorted((labels_dir / "train").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["labels"] and httpx.post(f"{url}/tag", json={"text": row["text"]},
                                            timeout=30).json()["labels"]:
                return row["text"]
    pytest.fail("the test model labels none of its training passages")


def test_page_shows_labels_and_highlighted_evidence(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, real, labels_dir = server
    text = labelled_text(url, labels_dir, real)
    endpoint = "/tag_document" if "\n\n" in text.strip() or len(text) > 1500 else "/tag"
    expected = httpx.post(f"{url}{endpoint}", json={"text": text, "evidence": True},
                          timeout=120).json()
    browser.get(url + "/")
    wait_for(browser, lambda: "model " in browser.find_element(By.ID, "model").text)
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "tag-button").click()
    wait_for(browser, lambda: browser.find_element(By.TAG_NAME, "body").get_attribute(
        "data-done") == "1")

    rows = browser.find_elements(By.CSS_SELECTOR, "#labels .label-row")
    assert len(rows) == len(expected["scores"])
    shown = [r.get_attribute("data-label") for r in rows if "present" in r.get_attribute("class")]
    assert shown and sorted(shown) == sorted(expected["labels"])
    assert browser.find_element(By.ID, "portrayal").text == expected["portrayal"]
    marks = browser.find_elements(By.CSS_SELECTOR, "#highlighted mark.evidence")
    marked = {(int(m.get_attribute("data-start")), int(m.get_attribute("data-end"))): m
              for m in marks}
    for label, hits in expected["evidence"].items():
        for hit in hits:
            covering = [m for (a, b), m in marked.items()
                        if hit["start"] <= a and b <= hit["end"]]
            assert "".join(m.text for m in covering).replace("\n", "") == \
                text[hit["start"]:hit["end"]].replace("\n", "")
            assert all(label in m.get_attribute("data-labels").split() for m in covering)
    # the highlighted text is the typed text, whole
    assert browser.find_element(By.ID, "highlighted").text.replace("\n", "") == \
        text.strip().replace("\n", "")
    if real:
        assert {"self_preservation", "manipulation"} <= set(shown)
    shot = Path(os.environ.get("TROPES_PAGE_SCREENSHOT") or tmp_path / "page.png")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_review_view_saves_in_labels_format(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    url, review, _, _ = server
    suggestions = tmp_path / "to_label.jsonl"
    rows = [{"id": f"sug-{i}", "text": f"The station AI logged passage {i} and waited.",
             "labels": None, "register": "other",
             "guess": {"labels": ["cooperation"], "scores": {}, "uncertain_about": "honesty",
                       "threshold": 0.2}} for i in range(3)]
    suggestions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    browser.get(url + "/review")
    wait_for(browser, lambda: "saving to" in browser.find_element(By.ID, "output").text)
    browser.find_element(By.ID, "file").send_keys(str(suggestions))
    wait_for(browser, lambda: browser.find_element(By.ID, "counter").text == "1 / 3")
    assert browser.find_element(By.ID, "passage").text == rows[0]["text"]
    button = browser.find_element(By.CSS_SELECTOR, '#label-buttons [data-label="honesty"]')
    button.click()  # the guess (cooperation) is preselected; add honesty
    browser.find_element(By.ID, "save").click()
    wait_for(browser, lambda: browser.find_element(By.ID, "counter").text == "2 / 3")
    saved = [json.loads(x) for x in review.read_text().splitlines()]
    assert saved == [{"id": "sug-0", "text": rows[0]["text"],
                      "labels": ["cooperation", "honesty"], "register": "other"}]
