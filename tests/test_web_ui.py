"""The page at / (server/web/) in a real browser against a live server of SmolLM2.

Headless Chromium and chromedriver from the distribution's packages (.ci/run installs
them; selenium only drives them, it downloads nothing). Without them these tests skip,
or fail when LUTLM_REQUIRE_BROWSER=1 (CI). Each state is saved as a screenshot under the
test's temporary directory.
"""

from __future__ import annotations

import os
import time

import pytest

from lutlm.server import ServerConfig

from .model_assets import smollm2_path
from .test_server import LiveServer

if os.environ.get("LUTLM_REQUIRE_BROWSER") != "1":  # CI: a missing selenium fails
    pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "web-secret"
# The smallest optimize-ir input: whatever SmolLM2 answers, the verifier says something.
TINY_IR = """define i32 @add(i32 %a, i32 %b) {
entry:
  %s = add i32 %a, %b
  ret i32 %s
}
"""
# Installed before a question: the lengths of the last answer's text at each DOM change.
WATCH_LENGTHS = """
window.answerLengths = [];
new MutationObserver(() => {
  const all = document.querySelectorAll('#messages .msg.assistant .content');
  if (all.length) window.answerLengths.push(all[all.length - 1].textContent.length);
}).observe(document.getElementById('messages'),
           {childList: true, subtree: true, characterData: true});
"""


def _server(**options) -> LiveServer:
    return LiveServer(
        ServerConfig.from_options(
            model=str(smollm2_path()),
            served_model_name="smol",
            max_model_len=512,
            kv_cache_memory_gb=0.25,
            **options,
        )
    )


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        msg = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("LUTLM_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,850",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server():
    srv = _server()
    yield srv
    srv.stop()


def wait(driver, condition, timeout=60.0, what="condition"):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"timed out waiting for {what}"
    )


def open_page(driver, srv) -> None:
    driver.get(f"http://127.0.0.1:{srv.port}/")
    # A fresh start: no conversation, settings or key from an earlier test.
    driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    driver.get(f"http://127.0.0.1:{srv.port}/")


def settings(driver, **values) -> None:
    if driver.find_element(By.ID, "settings").get_attribute("hidden") is not None:
        driver.find_element(By.ID, "toggle-settings").click()
    for name, value in values.items():
        field = driver.find_element(By.ID, name)
        field.clear()
        field.send_keys(str(value))


def ask(driver, text: str) -> None:
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys(text)
    prompt.send_keys(Keys.ENTER)  # the keyboard path: Enter sends


def last_answer(driver) -> str:
    answers = driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant .content")
    return answers[-1].text if answers else ""


def test_page_served_and_chat_streams_paris(browser, server, tmp_path):
    status, html = server.request("GET", "/")
    assert status == 200 and '<script src="/app.js"' in html
    open_page(browser, server)
    wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model info")
    assert "512" in browser.find_element(By.ID, "model-info").text  # context size shown
    settings(browser, temperature=0, **{"max-tokens": 40})
    # Streamed: record every length the answer's text passes through as it is drawn.
    browser.execute_script(WATCH_LENGTHS)
    ask(browser, "What is the capital of France?")
    wait(
        browser,
        lambda d: d.find_element(By.ID, "stop").is_enabled() or "Paris" in last_answer(d),
        what="the answer to start",
    )
    wait(browser, lambda d: not d.find_element(By.ID, "stop").is_enabled(), what="the end")
    assert "Paris" in last_answer(browser)
    lengths = browser.execute_script("return window.answerLengths;")
    assert len(set(lengths)) >= 3, lengths  # drawn in pieces, not once at the end
    stats = browser.find_element(By.CSS_SELECTOR, "#messages .msg.assistant .stats").text
    assert "tokens/s" in stats and "first token after" in stats
    # Kept in local storage: a reload shows the same conversation.
    browser.refresh()
    wait(browser, lambda d: "Paris" in last_answer(d), timeout=10, what="restored chat")
    browser.save_screenshot(str(tmp_path / "chat.png"))
    # Regenerate replaces the last answer (greedy: the same one again).
    browser.execute_script("document.querySelector('#messages .msg.assistant').remove();")
    browser.find_element(By.ID, "regenerate").click()
    wait(browser, lambda d: "Paris" in last_answer(d), what="the regenerated answer")
    wait(browser, lambda d: d.find_element(By.ID, "send").is_enabled(), what="the end")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#messages .msg")) == 2
    # New conversation: an empty chat, the old one still listed.
    browser.find_element(By.ID, "new-chat").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages .msg")
    titles = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#conversation-list button")]
    assert titles[0] == "New conversation" and titles[1].startswith("What is the capital")


def test_markdown_is_rendered_safely_and_narrow_window_fits(browser, server, tmp_path):
    open_page(browser, server)
    wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model info")
    # The page's own renderer on hostile model text: markup stays text, code gets a copy
    # button, inline code, bold and lists become elements.
    html = browser.execute_script(
        """
        const box = document.getElementById('messages');
        box.replaceChildren(renderMarkdown(arguments[0]));
        return box.innerHTML;
        """,
        "<img src=x onerror=alert(1)> **bold** and `x<y`\n\n- one\n- two\n\n"
        "```python\nprint('<b>hi</b>')\n```",
    )
    assert "<img" not in html and "&lt;img src=x" in html
    assert "<strong>bold</strong>" in html and "<code>x&lt;y</code>" in html
    assert html.count("<li>") == 2
    block = browser.find_element(By.CSS_SELECTOR, "#messages .code")
    assert "print('<b>hi</b>')" in block.find_element(By.TAG_NAME, "code").text
    assert block.find_element(By.CSS_SELECTOR, "button.copy").text == "Copy"
    browser.set_window_size(400, 800)
    try:
        browser.refresh()
        wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
        assert overflow <= 0  # nothing sticks out sideways on a phone-sized window
        browser.save_screenshot(str(tmp_path / "narrow.png"))
    finally:
        browser.set_window_size(1100, 850)


def test_stop_aborts_the_request_on_the_server(browser, server, tmp_path):
    engine = server.state.llm.engine
    open_page(browser, server)
    wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model info")
    # Greedy SmolLM2 runs this story to the 400-token limit: still going when stopped.
    settings(browser, temperature=0, **{"max-tokens": 400})
    ask(browser, "Write a very long story about a dragon and a knight.")
    wait(browser, lambda d: len(last_answer(d)) > 20, what="the answer to start")
    assert engine.num_requests == 1  # still generating when stop is pressed
    browser.save_screenshot(str(tmp_path / "streaming.png"))
    browser.find_element(By.ID, "stop").click()
    deadline = time.time() + 10
    while engine.num_requests and time.time() < deadline:
        time.sleep(0.05)
    assert engine.num_requests == 0 and not engine.has_unfinished()
    wait(
        browser,
        lambda d: "stopped" in d.find_element(By.CSS_SELECTOR, ".msg.assistant .stats").text,
        timeout=10,
        what="stopped note",
    )
    browser.save_screenshot(str(tmp_path / "stopped.png"))


def test_server_error_is_shown_as_a_message(browser, server, tmp_path):
    open_page(browser, server)
    wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model info")
    settings(browser, **{"max-tokens": 100000})  # beyond the 512-token context: a 400
    ask(browser, "Hello")
    error = wait(
        browser,
        lambda d: (
            d.find_element(By.ID, "error").is_displayed()
            and d.find_element(By.ID, "error-text").text
        ),
        timeout=20,
        what="error banner",
    )
    assert "max_tokens" in error or "512" in error
    msg = browser.find_element(By.CSS_SELECTOR, ".msg.error-msg").text
    assert "Error:" in msg
    browser.save_screenshot(str(tmp_path / "error.png"))


def test_task_round_trip_shows_verification(browser, server, tmp_path):
    open_page(browser, server)
    wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model info")
    settings(browser, temperature=0, **{"max-tokens": 24})
    browser.find_element(By.ID, "toggle-settings").click()  # closed again, for the screenshot
    browser.find_element(By.ID, "tab-tasks").click()
    assert not browser.find_element(By.ID, "chat-view").is_displayed()
    browser.find_element(By.ID, "task-input").send_keys(TINY_IR)
    browser.find_element(By.ID, "task-run").click()
    status = wait(
        browser, lambda d: d.find_element(By.ID, "task-status").text, timeout=60, what="task result"
    )
    assert status in ("verified", "failed", "unverified")
    # failed carries the tool's (or the extractor's) message; unverified names the tool.
    message = browser.find_element(By.ID, "task-message").text
    assert message
    if status == "unverified":
        assert "missing tool" in message
    assert browser.find_element(By.ID, "task-text").get_attribute("textContent")
    browser.save_screenshot(str(tmp_path / "tasks.png"))
    # SmolLM2 never writes a pass list that opt measures, so the other outcomes are shown
    # from results in the server's shape: the size against -Oz, a missing tool named.
    browser.execute_script(
        "showTaskResult(arguments[0]);",
        {
            "task": "optimize-ir",
            "answer": "-instcombine",
            "text": "-instcombine",
            "verification": {
                "status": "verified",
                "message": "",
                "tool": None,
                "details": {"object_size": 40, "oz_object_size": 50, "chosen": "model"},
            },
        },
    )
    assert browser.find_element(By.ID, "task-status").text == "verified"
    size = browser.find_element(By.ID, "task-size").text
    assert "40 bytes against 50 bytes with -Oz (-20.0%)" in size and "kept: model" in size
    browser.execute_script(
        "showTaskResult(arguments[0]);",
        {
            "task": "transpile",
            "answer": None,
            "text": "",
            "verification": {"status": "unverified", "message": "", "tool": "qemu-riscv64"},
        },
    )
    assert browser.find_element(By.ID, "task-message").text == "missing tool: qemu-riscv64"
    assert not browser.find_element(By.ID, "task-size").is_displayed()


def test_api_key_is_asked_for_then_works(browser, tmp_path):
    srv = _server(api_key=KEY)
    try:
        status, _ = srv.request("GET", "/app.js")
        assert status == 200  # the page loads without the key
        open_page(browser, srv)
        key = wait(
            browser,
            lambda d: (
                d.find_element(By.ID, "api-key").is_displayed() and d.find_element(By.ID, "api-key")
            ),
            timeout=20,
            what="key field",
        )
        browser.save_screenshot(str(tmp_path / "key.png"))
        key.send_keys(KEY + Keys.ENTER)
        wait(browser, lambda d: "smol" in d.find_element(By.ID, "model-info").text, what="model")
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert KEY not in browser.current_url
        settings(browser, temperature=0, **{"max-tokens": 8})
        ask(browser, "Hi")
        wait(
            browser,
            lambda d: not d.find_element(By.ID, "stop").is_enabled() and last_answer(d),
            what="an answer",
        )
        assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error-msg")
        browser.save_screenshot(str(tmp_path / "key-chat.png"))
    finally:
        srv.stop()


def test_page_loads_nothing_from_outside():
    from starlette.testclient import TestClient

    from lutlm.server import create_app
    from lutlm.server.web_ui import WEB_DIR, WEB_FILES

    for name, _ in WEB_FILES.values():
        text = (WEB_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text, name
    config = ServerConfig.from_options(model=str(smollm2_path()), api_key=KEY)
    # No `with`: the lifespan (which loads the model) never runs; routing alone is tested.
    client = TestClient(create_app(config))
    for path in WEB_FILES:
        resp = client.get(path)  # open without the key
        assert resp.status_code == 200, path
        assert "default-src 'self'" in resp.headers["content-security-policy"]
    assert client.get("/v1/models").status_code == 401


def test_no_web_ui_turns_the_page_off():
    from starlette.testclient import TestClient

    from lutlm.server import create_app

    config = ServerConfig.from_options(model=str(smollm2_path()), web_ui=False)
    # No `with`: the lifespan (which loads the model) never runs; routing alone is tested.
    client = TestClient(create_app(config))
    assert client.get("/").status_code == 404
    assert client.get("/app.js").status_code == 404
