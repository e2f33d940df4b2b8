"""The web console (`GET /`) in a real headless Chromium (Debian's chromium
and chromedriver, driven by selenium) against the real daemon serving the
demo model: the page runs its scripts, reads `/events` with fetch, and acts
through the `/models` endpoints. Screenshots go to $CONSOLE_SCREENSHOTS, or a
temporary directory; their paths are printed."""

import json
import os
import re
import signal
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import running_daemon
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_openai_http import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY = "console-key-4b1e9a"
MODEL = "gemma"
SHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-"))


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    d = tmp_path_factory.mktemp("console-models")
    (d / f"{MODEL}.gguf").hardlink_to(demo_model)
    return d


def serve(router_bin, models, tmp, env=None):
    port = free_port()
    return port, running_daemon(router_bin, models, tmp, "--http-port", str(port), env=env)


@pytest.fixture(scope="module")
def daemon(models, router_bin, tmp_path_factory):
    """The base URL of a daemon with no API key."""
    port, running = serve(router_bin, models, tmp_path_factory.mktemp("console-daemon"))
    with running:
        yield f"http://127.0.0.1:{port}"


def new_browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": INSTRUMENT})
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    return browser


@pytest.fixture(scope="module")
def browser():
    b = new_browser()
    yield b
    b.quit()


def call(base, method, path, body=None, key=None):
    """(status, parsed JSON body) of an HTTP call."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def model(base, key=None):
    status, body = call(base, "GET", "/models", key=key)
    assert status == 200, body
    return next(m for m in body["data"] if m["id"] == MODEL)


def wait(browser, condition, timeout=60, message=""):
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda b: condition(b), message)


def click(browser, selector):
    """Clicks what `selector` finds; the table is rebuilt on each event, so a
    row's button found a moment ago may be gone: find it again and retry."""

    def clicked(b):
        try:
            b.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    wait(browser, clicked, timeout=10, message=f"could not click {selector}")


def row_state(browser):
    return browser.execute_script(
        "const r = document.querySelector(`tr[data-model='${arguments[0]}']`); return r ? r.dataset.state : null;", MODEL
    )


def cell(browser, label):
    return browser.find_element(By.CSS_SELECTOR, f"tr[data-model='{MODEL}'] td[data-label='{label}']").text


def open_console(browser, base):
    browser.get(base + "/")
    wait(browser, lambda b: row_state(b) is not None, message="the model's row never appeared")
    # What loading the page fetched is read (and dropped) here.
    return requests_made(browser)


def unload(base):
    call(base, "POST", "/models/unload", {"model": MODEL})
    deadline = time.time() + 60
    while model(base)["state"] not in ("discovered", "unloaded", "failed"):
        assert time.time() < deadline, model(base)
        time.sleep(0.1)


def requests_made(browser):
    """(method, path, request id) of every request the page sent since the last call,
    and the ids of requests that finished or failed."""
    sent, ended = [], set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url.startswith("http"):
                sent.append((params["request"]["method"], urlparse(url).path, params["requestId"], url))
        elif message["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
            ended.add(params["requestId"])
    return sent, ended


# Counts the page's fetch calls and timers from before its scripts run.
INSTRUMENT = """
window.__fetched = [];
window.__intervals = 0;
const realFetch = window.fetch.bind(window);
window.fetch = (input, init) => {
  window.__fetched.push(((init && init.method) || 'GET') + ' ' + new URL(String(input.url || input), location.href).pathname);
  return realFetch(input, init);
};
const realInterval = window.setInterval.bind(window);
window.setInterval = (...args) => { window.__intervals += 1; return realInterval(...args); };
"""

# The page's rendered boxes: none may reach past the window's right edge, and
# the table's scroll box must not need to scroll (it would hide overflow from
# documentElement.scrollWidth). What a visually hidden box clips is skipped.
OVERFLOW = """
const width = window.innerWidth;
const clipped = (e) => {
  for (let a = e.parentElement; a; a = a.parentElement) {
    const s = getComputedStyle(a);
    if ((s.overflowX === 'hidden' || s.overflowX === 'clip' || s.clip !== 'auto') && a.getBoundingClientRect().right <= width + 1) return true;
  }
  return false;
};
const wide = [];
for (const e of document.body.querySelectorAll('*')) {
  if (!e.getClientRects().length) continue;
  const r = e.getBoundingClientRect();
  if (r.width > 0 && r.right > width + 1 && !clipped(e)) wide.push(e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className + ' right=' + Math.round(r.right));
}
for (const w of document.querySelectorAll('.tablewrap')) {
  if (w.scrollWidth > w.clientWidth) wide.push('.tablewrap scrolls: ' + w.scrollWidth + ' > ' + w.clientWidth);
}
return {width, wide};
"""


def assert_no_horizontal_overflow(browser, width):
    got = browser.execute_script(OVERFLOW)
    assert got["width"] == width, got
    assert not got["wide"], f"wider than {width} px: {got['wide'][:10]}"


def screenshot(browser, name):
    path = SHOTS / name
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_the_demo_model_is_listed_with_its_state(daemon, browser):
    unload(daemon)
    (sent, _) = open_console(browser, daemon)
    assert ("GET", "/events") in [(m, p) for m, p, _, _ in sent]
    assert row_state(browser) == model(daemon)["state"]
    assert cell(browser, "Model").startswith(MODEL)
    assert cell(browser, "Quant") == "Q4_K_M"
    wait(browser, lambda b: "version" in b.find_element(By.ID, "strip").text.lower(), message="no status strip")
    assert browser.find_element(By.ID, "conn").text == "live"


def test_load_updates_the_table_live_from_events_without_polling(daemon, browser):
    unload(daemon)
    sent, ended = open_console(browser, daemon)
    events = [rid for m, p, rid, _ in sent if p == "/events"]
    assert len(events) == 1, sent
    assert row_state(browser) in ("discovered", "unloaded")
    click(browser, f"tr[data-model='{MODEL}'] button[data-action='load']")
    wait(browser, lambda b: row_state(b) == "ready", message="the row never showed ready")
    assert cell(browser, "Resident") != "–"
    time.sleep(5)  # more than twice the server's 2 s tick: any polling timer shows itself
    after, ended_after = requests_made(browser)
    assert [(m, p) for m, p, _, _ in after] == [("POST", "/models/load")], after
    fetched = browser.execute_script("return window.__fetched;")
    assert fetched == ["GET /events", "POST /models/load"], fetched
    assert browser.execute_script("return window.__intervals;") == 0, "the page must not poll"
    assert events[0] not in ended | ended_after, "the /events stream must stay open"
    assert model(daemon)["state"] == "ready"


def test_tab_and_enter_alone_load_a_model(daemon, browser):
    unload(daemon)
    open_console(browser, daemon)
    browser.find_element(By.TAG_NAME, "body").click()
    focused = "const e = document.activeElement; return e && e.dataset.action === 'load' && e.closest('tr').dataset.model;"
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script(focused) == MODEL:
            break
    else:
        pytest.fail("Tab never reached the model's Load button")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait(browser, lambda b: row_state(b) == "ready", message="Enter on Load did not load the model")


def run_playground(browser, max_tokens):
    """Streams a completion from the playground; returns (text, stats)."""
    Select(browser.find_element(By.ID, "pg-model")).select_by_value(MODEL)
    Select(browser.find_element(By.ID, "pg-mode")).select_by_value("completion")
    tokens = browser.find_element(By.ID, "pg-max")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    browser.find_element(By.ID, "pg-send").click()
    wait(browser, lambda b: "total" in b.find_element(By.ID, "pg-stats").text, timeout=120, message="never finished")
    return browser.find_element(By.ID, "pg-out").text, browser.find_element(By.ID, "pg-stats").text


def test_the_playground_streams_a_completion(daemon, browser):
    open_console(browser, daemon)
    browser.execute_script(
        """window.__growth = [];
        const out = document.getElementById('pg-out');
        new MutationObserver(() => window.__growth.push(out.textContent.length))
            .observe(out, {childList: true, characterData: true, subtree: true});"""
    )
    text, stats = run_playground(browser, 40)
    growth = [n for n in browser.execute_script("return window.__growth;") if n > 0]
    print(f"playground: {text!r}; {stats}; lengths seen: {growth}")
    assert text.strip(), stats
    assert len(set(growth)) >= 2 and growth == sorted(growth), f"the text must grow in steps: {growth}"
    assert "completion tokens" in stats and "first token after" in stats, stats


def test_a_worker_killed_by_sigsegv_shows_failed_with_its_reason(daemon, browser):
    open_console(browser, daemon)
    browser.execute_script("window.__same_page = true;")
    status, body = call(daemon, "POST", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 1})
    assert status == 200, body
    pid = model(daemon)["worker_pid"]
    assert pid, model(daemon)
    wait(browser, lambda b: cell(b, "Worker") == f"pid {pid}", message="the worker's pid never showed")
    os.kill(pid, signal.SIGSEGV)
    wait(browser, lambda b: row_state(b) == "failed", message="the crash never showed")
    reason = cell(browser, "State")
    assert "SIGSEGV" in reason, reason
    assert browser.execute_script("return window.__same_page === true;"), "the page was reloaded"
    screenshot(browser, "console-failed-1280x800.png")
    # The reason links to the crash report, which opens in the page.
    click(browser, f"tr[data-model='{MODEL}'] button.crash-link")
    wait(browser, lambda b: b.find_element(By.ID, "crash").is_displayed(), message="the crash report never opened")
    report = browser.find_element(By.ID, "crash-body").text
    assert '"signal_name": "SIGSEGV"' in report and f'"model": "{MODEL}"' in report, report
    status, crashes = call(daemon, "GET", "/crashes")
    assert status == 200 and crashes["data"][0]["signal"] == "SIGSEGV", crashes
    screenshot(browser, "console-crash-report.png")
    browser.find_element(By.ID, "crash-close").click()
    assert_no_horizontal_overflow(browser, 1280)
    click(browser, f"tr[data-model='{MODEL}'] button[data-action='details']")
    wait(browser, lambda b: b.find_element(By.ID, "detail-logs").text.strip() != "", message="no log lines")
    assert_no_horizontal_overflow(browser, 1280)


def test_no_horizontal_scroll_on_a_phone(daemon, browser):
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    )
    try:
        open_console(browser, daemon)
        click(browser, f"tr[data-model='{MODEL}'] button[data-action='details']")
        wait(browser, lambda b: b.find_element(By.ID, "detail-logs").text.strip() != "", message="no log lines")
        assert_no_horizontal_overflow(browser, 390)
        screenshot(browser, "console-390x844-model-view.png")
        browser.execute_script("window.scrollTo(0, 0);")
        screenshot(browser, "console-390x844.png")
    finally:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        )


# Lines llama.cpp writes on the worker's stderr while it loads a model
# (the daemon itself never writes these).
WORKER_STDERR = re.compile(r"constructing llama_context|KV buffer size|load_tensors|loading model tensors")


def test_the_model_view_shows_settings_logs_and_timings(daemon, browser):
    unload(daemon)
    open_console(browser, daemon)
    # A worker starts and answers: its load output and one generation's timing.
    text, stats = run_playground(browser, 8)
    assert text.strip(), stats
    status, body = call(daemon, "GET", f"/models/{MODEL}/timings")
    assert status == 200, body
    assert any(p["ttft_ms"] > 0 for p in body["timings"]), body
    click(browser, f"tr[data-model='{MODEL}'] button[data-action='details']")
    note = wait(
        browser,
        lambda b: re.match(r"(\d+) generations", b.find_element(By.ID, "chart-note").text),
        message="the chart never showed a generation",
    )
    assert int(note.group(1)) >= 1
    chart = browser.find_element(By.ID, "chart")
    assert int(chart.get_attribute("data-points")) >= 1
    assert float(chart.get_attribute("data-max-ttft-ms")) > 0, "the chart drew no time to first token"
    logs = wait(
        browser,
        lambda b: WORKER_STDERR.search(b.find_element(By.ID, "detail-logs").text) and b.find_element(By.ID, "detail-logs").text,
        message="no line from the worker's stderr in the model view",
    )
    print(f"model view logs (tail): {logs[-500:]!r}")
    assert "ctx_size" in browser.find_element(By.ID, "detail-settings").text


def test_a_failed_action_shows_the_servers_message(daemon, browser):
    open_console(browser, daemon)
    status, body = call(daemon, "POST", "/models/load", {"model": "no-such-model"})
    assert status == 404
    assert not browser.find_element(By.ID, "error").is_displayed()
    # What a Load button runs, for a model the server does not know.
    browser.execute_script("onAction('no-such-model', 'load');")
    wait(browser, lambda b: b.find_element(By.ID, "error").is_displayed(), message="no error shown")
    assert body["error"]["message"] in browser.find_element(By.ID, "error-text").text


def test_with_an_api_key_the_page_refuses_until_the_key_is_given(models, router_bin, tmp_path_factory):
    port, running = serve(
        router_bin, models, tmp_path_factory.mktemp("console-key"), env={"LLAMA_ROUTER_API_KEY": KEY}
    )
    with running:
        base = f"http://127.0.0.1:{port}"
        assert call(base, "GET", "/models")[0] == 401
        assert call(base, "GET", "/health")[0] == 200
        browser = new_browser()
        try:
            browser.get(base + "/")
            key = wait(browser, lambda b: b.find_element(By.ID, "key") if b.find_element(By.ID, "key").is_displayed() else None)
            assert not browser.find_element(By.ID, "app").is_displayed()
            assert row_state(browser) is None
            key.send_keys("wrong-key", Keys.ENTER)
            wait(browser, lambda b: "refused" in b.find_element(By.ID, "keymsg").text, message="a wrong key was not refused")
            assert "API key" in browser.find_element(By.ID, "keymsg").text
            assert row_state(browser) is None
            screenshot(browser, "console-key-refused.png")
            browser.find_element(By.ID, "key").send_keys(KEY, Keys.ENTER)
            wait(browser, lambda b: row_state(b) is not None, message="the key was not accepted")
            assert browser.execute_script("return sessionStorage.getItem('llama-router-api-key');") == KEY
            sent, _ = requests_made(browser)
            assert all(KEY not in url for _, _, _, url in sent), "the key must never go into a URL"
            screenshot(browser, "console-with-key.png")
        finally:
            browser.quit()
