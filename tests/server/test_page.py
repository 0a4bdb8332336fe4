"""The playground at / in a real browser: Debian's headless Chromium driven by Selenium, against
a live server with the tiny model, an index and an API key.

What a person sees must be what the API answers: the same hits in the same order, the same
similarity scores. Texts from the index and from the person stay text (a planted
`<img src=x onerror=...>` never runs), a wrong key, an empty box, a 100 kB query and a server
that went away each get a clear message, and the browser logs no error it was not told to
expect. Each view is photographed into docs/screenshots/ (the README shows them)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from sentembed.server import ServerConfig, create_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

KEY = "playground-key"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PAYLOAD = '<img src=x onerror="window.__pwned = 1">'
HARBOUR = " ".join(f"Note {i} on harbours, quays and fishing boats." for i in range(30)) + " A zeppelin drifted over."
DOCS = {
    "cat": ("A cat sat on the mat.", {"topic": "pets"}),
    "kitten": ("The kitten is sleeping by the fire.", {"topic": "pets", "age": 1}),
    "stocks": ("Stocks fell sharply today.", {"topic": "money"}),
    "rain": ("Rain is expected tomorrow.", None),
    "harbour": (HARBOUR, {"topic": "sea"}),
    "markup": (f"Boats {PAYLOAD} in the harbour <script>window.__pwned = 2</script>.", {"note": PAYLOAD}),
    "short-markup": ("<i>Boats</i> in the <u>harbour</u>", {PAYLOAD: [PAYLOAD]}),  # one passage: the whole text
}


@pytest.fixture(scope="module")
def server(tiny_encoder, tmp_path_factory, live_server):
    """A server with an index and an API key: (url, index)."""
    from sentembed.search.index import Index

    index = Index.create(tmp_path_factory.mktemp("page") / "index", tiny_encoder, chunk_tokens=60, chunk_overlap=8)
    index.add([t for t, _ in DOCS.values()], ids=list(DOCS), metadata=[m for _, m in DOCS.values()])
    with live_server(create_app(tiny_encoder, index, ServerConfig(api_key=KEY, model_name="tiny-mpnet"))) as url:
        yield url, index


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver on PATH (`make setup` installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")  # new and empty: no state from elsewhere
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1000,860"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def console_errors(driver, expected: tuple[str, ...] = ()) -> list[str]:
    """The browser's SEVERE log entries since the last call, less those naming an expected text."""
    entries = driver.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)]


def by_id(driver, name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_page(driver, url: str, key: str | None = KEY, view: str = "search") -> None:
    """A fresh page with no stored key; `key` typed into the form the page shows."""
    driver.get(f"{url}/#{view}")
    driver.execute_script("sessionStorage.clear(); window.__pwned = undefined;")
    driver.refresh()
    wait_for(driver, lambda d: by_id(d, "key-form").is_displayed())
    if key is not None:
        by_id(driver, "key-input").send_keys(key + "\n")  # Enter submits the form
        wait_for(driver, lambda d: "tiny-mpnet" in by_id(d, "model-line").text)
        assert console_errors(driver, expected=("401",)) == []  # only the first /info, before the key


def submit_and_wait(driver, form: str, status: str) -> str:
    """Submit a view's form; the status text once the answer (or its error) is shown."""
    driver.execute_script("document.getElementById(arguments[0]).className = 'status';", status)
    by_id(driver, form).find_element("css selector", "button[type=submit]").click()
    wait_for(driver, lambda d: any(k in by_id(d, status).get_attribute("class") for k in (" ok", " error")))
    return by_id(driver, status).text


def set_value(driver, element_id: str, value: str) -> None:
    # send_keys of 100 kB would type for minutes; setting the value is what a paste does.
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1];", element_id, value)


def api(url: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def screenshot(driver, name: str) -> None:
    """The whole view, top to bottom, as docs/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    height = min(driver.execute_script("window.scrollTo(0, 0); return document.documentElement.scrollHeight;"), 2400)
    driver.set_window_size(size["width"], height)
    driver.set_window_size(size["width"], 2 * height - driver.execute_script("return window.innerHeight;"))
    try:  # 128 colours: a third of the bytes, and the page's flat colours stay exact
        image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        image.quantize(colors=128).save(SCREENSHOTS / f"{name}.png", optimize=True)
    finally:
        driver.set_window_size(size["width"], size["height"])


def test_the_page_is_served_without_the_key(server):
    """No browser needed: the files, their types, the open paths, and nothing else of the disk."""
    from sentembed.server.limits import OPEN_PATHS
    from sentembed.server.page import PAGE_FILES

    url, _ = server
    assert set(PAGE_FILES) <= OPEN_PATHS
    for path, (_, media_type) in PAGE_FILES.items():
        r = httpx.get(url + path)
        assert r.status_code == 200 and r.headers["content-type"] == media_type and r.content
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert 'src="/static/app.js"' in httpx.get(url + "/").text
    assert httpx.get(url + "/info").status_code == 401  # the API itself still wants the key
    for path in ("/static/page.py", "/static/", "/static/%2e%2e/app.py", "/app.js"):  # a fixed table, no paths
        assert httpx.get(url + path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 404, path


def test_page_asks_for_the_key(server, browser):
    url, _ = server
    console_errors(browser)
    open_page(browser, url, key=None)
    assert "asks for an API key" in by_id(browser, "server-status").text
    by_id(browser, "key-input").send_keys(KEY + "\n")
    wait_for(browser, lambda d: "tiny-mpnet" in by_id(d, "model-line").text)
    assert not by_id(browser, "server-status").is_displayed()
    assert console_errors(browser, expected=("401",)) == []  # the first /info, before the key


def test_search_shows_the_hits_the_api_returns(server, browser):
    url, _ = server
    open_page(browser, url)
    cases = [("a small cat", "", None), ("zeppelin harbour", "lexical", None), ("boats", "hybrid", '{"topic": "sea"}'),
             ("sleeping pets", "hybrid", None), ("cat", "dense", '{"topic": "pets"}')]
    for query, mode, where in cases:
        set_value(browser, "search-query", query)
        browser.execute_script("document.getElementById('search-mode').value = arguments[0];", mode)
        set_value(browser, "search-where", where or "")
        status = submit_and_wait(browser, "search-form", "search-status")
        body = {"query": query, "top_k": 10, "truncate": True, **({"mode": mode} if mode else {})}
        if where:
            body["where"] = {"topic": "sea" if "sea" in where else "pets"}
        expected = api(url, "/search", body)["results"][0]
        shown = css(browser, "#search-results > li")
        assert f"{len(expected)} hit" in status and "server" in status and " ms" in status
        assert [li.get_attribute("data-id") for li in shown] == [h["id"] for h in expected], (query, mode)
        assert [float(li.get_attribute("data-score")) for li in shown] == pytest.approx(
            [h["score"] for h in expected], abs=1e-5)
    # the lexical hit on the long text: its matching passage is the highlighted part
    set_value(browser, "search-query", "zeppelin")
    browser.execute_script("document.getElementById('search-mode').value = 'lexical';")
    set_value(browser, "search-where", "")
    submit_and_wait(browser, "search-form", "search-status")
    top = api(url, "/search", {"query": "zeppelin", "mode": "lexical", "truncate": True})["results"][0][0]
    assert top["id"] == "harbour"
    assert css(browser, "#search-results > li mark")[0].text == top["passage"].strip()
    set_value(browser, "search-query", "a zeppelin over the boats")
    browser.execute_script("document.getElementById('search-mode').value = 'hybrid';")
    set_value(browser, "search-topk", "3")
    assert "3 hits" in submit_and_wait(browser, "search-form", "search-status")
    screenshot(browser, "search")
    assert console_errors(browser) == []


def test_compare_shows_the_scores_similarity_returns(server, browser):
    url, _ = server
    open_page(browser, url, view="compare")
    source, targets = "A cat sat on the mat.", ["A kitten rests on a rug.", "Stocks fell sharply.", "The cat sat."]
    set_value(browser, "compare-source", source)
    set_value(browser, "compare-targets", "\n".join(targets) + "\n\n")
    status = submit_and_wait(browser, "compare-form", "compare-status")
    expected = api(url, "/similarity", {"sources": [source], "targets": targets, "truncate": True})
    assert expected["similarity_fn"] in status
    rows = css(browser, "#compare-results > li")
    assert [r.find_element("css selector", ".bar-text").text for r in rows] == targets
    assert [float(r.get_attribute("data-score")) for r in rows] == pytest.approx(expected["scores"][0], abs=1e-9)
    texts = ["A man plays a guitar.", "Someone plays music.", "Shares dropped.", "The market fell."]
    set_value(browser, "heatmap-texts", "\n".join(texts))
    submit_and_wait(browser, "heatmap-form", "heatmap-status")
    matrix = api(url, "/similarity", {"sources": texts, "targets": texts, "truncate": True})["scores"]
    cells = [float(td.get_attribute("data-score")) for td in css(browser, "#heatmap td")]
    assert cells == pytest.approx([s for row in matrix for s in row], abs=1e-9)
    screenshot(browser, "compare")
    assert console_errors(browser) == []


def test_model_view_and_keyboard(server, browser):
    from selenium.webdriver.common.keys import Keys

    url, _ = server
    open_page(browser, url)
    info = httpx.get(url + "/info", headers={"Authorization": f"Bearer {KEY}"}).json()
    by_id(browser, "tab-search").send_keys(Keys.ARROW_RIGHT)  # the tabs follow the arrow keys
    assert by_id(browser, "tab-compare").get_attribute("aria-selected") == "true"
    by_id(browser, "tab-compare").send_keys(Keys.END)
    assert browser.switch_to.active_element.get_attribute("id") == "tab-model"
    assert by_id(browser, "view-model").is_displayed() and not by_id(browser, "view-search").is_displayed()
    wait_for(browser, lambda d: "API requests answered" in by_id(d, "model-metrics").text)
    facts = by_id(browser, "model-info").text
    for value in (info["model"], str(info["dimension"]), str(info["max_seq_length"]), info["similarity_fn"]):
        assert value in facts
    assert str(info["limits"]["max_batch_tokens"]) in by_id(browser, "model-limits").text
    screenshot(browser, "model")
    assert console_errors(browser) == []


def test_model_view_first_waits_for_the_key(server, browser):
    url, _ = server
    open_page(browser, url, view="model")  # /info and /metrics refused until the key is typed
    wait_for(browser, lambda d: "API requests answered" in by_id(d, "model-metrics").text)
    assert "Updated" in by_id(browser, "metrics-status").text
    assert console_errors(browser, expected=("401",)) == []


def test_a_wrong_key_is_named(server, browser):
    url, _ = server
    open_page(browser, url, key=None)
    by_id(browser, "key-input").send_keys("not-the-key\n")
    wait_for(browser, lambda d: "refused" in by_id(d, "server-status").text)
    assert "wrong API key" in by_id(browser, "server-status").text
    assert by_id(browser, "key-form").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('sentembed.apiKey')") is None
    assert "not-the-key" not in browser.current_url
    assert console_errors(browser, expected=("401",)) == []


def test_markup_in_texts_and_metadata_stays_text(server, browser):
    url, _ = server
    open_page(browser, url)
    set_value(browser, "search-query", f"boats harbour {PAYLOAD}")
    browser.execute_script("document.getElementById('search-mode').value = 'lexical';")
    submit_and_wait(browser, "search-form", "search-status")
    hits = {li.get_attribute("data-id"): li for li in css(browser, "#search-results > li")}
    assert PAYLOAD in hits["markup"].find_element("css selector", ".passage").text
    assert "<script>window.__pwned = 2</script>" in hits["markup"].text
    assert PAYLOAD in hits["markup"].find_element("css selector", ".meta dd").text
    assert hits["short-markup"].find_element("css selector", ".passage").text == DOCS["short-markup"][0]
    assert hits["short-markup"].find_element("css selector", ".meta dt").text == PAYLOAD
    by_id(browser, "tab-compare").click()  # the person's own texts, in the bars and the heatmap
    set_value(browser, "compare-source", PAYLOAD)
    set_value(browser, "compare-targets", f"{PAYLOAD}\n<b>bold</b>")
    submit_and_wait(browser, "compare-form", "compare-status")
    assert css(browser, "#compare-results .bar-text")[0].text == PAYLOAD
    set_value(browser, "heatmap-texts", f"{PAYLOAD}\n<b>bold</b>")
    submit_and_wait(browser, "heatmap-form", "heatmap-status")
    assert css(browser, "#heatmap th[scope=row]")[0].text == f"1. {PAYLOAD}"
    assert css(browser, "main img, main script, main b, main i, main u") == []
    assert browser.execute_script("return window.__pwned") is None
    assert console_errors(browser) == []  # an <img src=x> let in would log its failed load


def test_an_empty_box_and_a_100kB_query(server, browser):
    url, _ = server
    open_page(browser, url)
    for empty in ("", "  \n "):
        set_value(browser, "search-query", empty)
        assert "Type a query first" in submit_and_wait(browser, "search-form", "search-status")
        assert css(browser, "#search-results > li") == []
    words = ["boats", "harbour"] + [f"word{i}" for i in range(12_000)]  # distinct words: a pasted text
    huge = " ".join(words)[:100_000]
    assert len(huge.encode()) >= 99_000
    for mode in ("dense", "lexical", "hybrid"):
        browser.execute_script("document.getElementById('search-mode').value = arguments[0];", mode)
        set_value(browser, "search-query", huge)
        status = submit_and_wait(browser, "search-form", "search-status")
        assert "hit" in status and "The query is long" in status, (mode, status)
        assert css(browser, "#search-results > li"), mode
    set_value(browser, "search-where", "{not json")
    set_value(browser, "search-query", "cat")
    assert "not JSON" in submit_and_wait(browser, "search-form", "search-status")
    assert console_errors(browser) == []


def test_a_server_that_went_away_is_named(tiny_encoder, browser, live_server):
    with live_server(create_app(tiny_encoder, config=ServerConfig(model_name="tiny-mpnet"))) as url:
        browser.get(f"{url}/#compare")
        wait_for(browser, lambda d: "tiny-mpnet" in by_id(d, "model-line").text)
        assert not by_id(browser, "search-form").is_displayed()
        assert "has no index" in by_id(browser, "no-index").get_attribute("textContent")
    console_errors(browser)
    status = submit_and_wait(browser, "compare-form", "compare-status")
    assert "Cannot reach the server" in status
    assert "Cannot reach the server" in by_id(browser, "server-status").text
    assert console_errors(browser, expected=("ERR_CONNECTION_REFUSED", "Failed to fetch")) == []
