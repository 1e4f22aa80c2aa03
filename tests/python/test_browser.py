"""JupyterLab in a real browser (Debian's chromium driven by Playwright): the
launcher shows "Rust (ferrolab)" with its logo; a notebook on it runs a cell with
output and a value, shows a compile error, stops `loop {}` with the interrupt
button, survives "Restart Kernel" from the menu, and runs magics; JupyterLab's
"New Subshell Console for Notebook" (protocol 5.5 subshells) answers `%pwd`
while the notebook's cell still runs.

A screenshot of every step goes to $FERROLAB_TEST_ARTIFACTS/browser (kept after a
failure). Playwright never downloads a browser: it launches /usr/bin/chromium.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import listening_port
from playwright import sync_api as playwright  # pinned in requirements.txt: missing is an error, not a skip

CHROMIUM = os.environ.get("FERROLAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("FERROLAB_TEST_ARTIFACTS", "test-artifacts")) / "browser"
STEP_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `./kernel test` installs Debian's chromium package")
    root = tmp_path_factory.mktemp("lab-root")
    settings = tmp_path_factory.mktemp("lab-settings")
    # No news or update toasts over the page.
    overrides = settings / "overrides"
    overrides.mkdir()
    (overrides / "overrides.json").write_text(json.dumps({
        "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False, "fetchNews": "false"},
    }))
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings / "user"),
           "JUPYTER_CONFIG_DIR": str(settings / "config")}
    server = subprocess.Popen(
        # Port 0: the server takes a free port and the test reads which from the OS.
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.port_retries=0", f"--LabApp.app_settings_dir={overrides}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    port = listening_port(server, describe=lambda: server.stderr.read() if server.poll() is not None else "")
    url = f"http://127.0.0.1:{port}"
    yield {"url": url, "token": token, "root": root}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


class Steps:
    """Screenshots, numbered in order, under the artifacts folder."""

    def __init__(self, page):
        self.page = page
        self.count = 0
        if ARTIFACTS.exists():
            shutil.rmtree(ARTIFACTS)
        ARTIFACTS.mkdir(parents=True)
        self.paths = []

    def shot(self, name):
        self.count += 1
        path = ARTIFACTS / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        print(f"screenshot: {path}")


def run_cell(page, code):
    """Types `code` into the active cell and runs it with Shift+Enter."""
    editor = page.locator(".jp-Notebook .jp-Cell.jp-mod-active .cm-content")
    editor.click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def cell_output(page, index):
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea")


class SubshellCreation:
    """Watches the page's kernel websockets for a finished `create_subshell_request`.

    JupyterLab's subshell console sends what is typed into it on the main shell until
    its create_subshell_request is done (the reply and the kernel's idle status for it
    have both arrived; only then does it add the subshell's id to every request): a
    command typed before that waits behind the notebook's running cell. A person sees
    the console connect; the test waits for those two messages themselves."""

    IDLE = re.compile(rb'"execution_state":\s*"idle"')
    PARENT = re.compile(rb'"msg_type":\s*"create_subshell_request"')

    def __init__(self, page):
        self.seen = {}  # websocket -> {"reply", "idle"}
        page.on("websocket", self._watch)

    def _watch(self, socket):
        if "/channels" in socket.url:
            self.seen[socket] = set()
            socket.on("framereceived", lambda payload: self._frame(socket, payload))

    def _frame(self, socket, payload):
        data = payload if isinstance(payload, (bytes, bytearray)) else payload.encode()
        if b"create_subshell_reply" in data:
            self.seen[socket].add("reply")
        elif self.IDLE.search(data) and self.PARENT.search(data):
            self.seen[socket].add("idle")

    def done(self):
        return any(seen == {"reply", "idle"} for seen in self.seen.values())

    def wait(self, page):
        deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
        while not self.done():
            assert time.monotonic() < deadline, "the console's create_subshell_request never finished"
            page.wait_for_timeout(50)  # lets Playwright deliver the websocket events


def wait_idle(page):
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=STEP_TIMEOUT_MS)


def test_jupyterlab_round_trip(lab):
    started = time.monotonic()
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(STEP_TIMEOUT_MS)
        steps = Steps(page)
        subshells = SubshellCreation(page)
        try:
            page.goto(f"{lab['url']}/lab?token={lab['token']}")
            card = page.locator(".jp-LauncherCard[title='Rust (ferrolab)']").first
            card.wait_for()
            logo = card.locator("img")
            logo.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=logo.element_handle())
            steps.shot("launcher")

            card.click()
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for()
            page.get_by_text("Rust (ferrolab)", exact=True).first.wait_for()
            wait_idle(page)
            steps.shot("new-notebook")

            run_cell(page, 'println!("hello from the browser");\n6 * 7')
            first = cell_output(page, 0)
            first.get_by_text("hello from the browser").wait_for()
            first.locator(".jp-OutputArea-executeResult").get_by_text("42", exact=True).wait_for()
            steps.shot("output-and-value")

            run_cell(page, 'let broken: u32 = "not a number";')
            cell_output(page, 1).get_by_text(re.compile("mismatched types")).wait_for()
            steps.shot("compile-error")

            run_cell(page, 'let kept = 5;')
            run_cell(page, 'println!("spinning"); loop { std::hint::spin_loop(); }')
            spinning = cell_output(page, 3)
            spinning.get_by_text("spinning").wait_for()
            page.locator("jp-button[data-command='notebook:interrupt-kernel'], "
                         "button[data-command='notebook:interrupt-kernel']").first.click()
            spinning.get_by_text(re.compile("Interrupted")).wait_for()
            wait_idle(page)
            steps.shot("interrupted")

            page.get_by_role("menuitem", name="Kernel").click()
            page.get_by_role("menuitem", name=re.compile("^Restart Kernel…")).click()
            page.locator(".jp-Dialog-button.jp-mod-accept").click()
            wait_idle(page)
            run_cell(page, "1 + 1")
            cell_output(page, 4).locator(".jp-OutputArea-executeResult").get_by_text("2", exact=True).wait_for()
            steps.shot("after-restart")

            run_cell(page, "%pwd\n!echo hi")
            magic = cell_output(page, 5)
            magic.get_by_text("hi", exact=True).wait_for()
            magic.get_by_text(str(lab["root"]), exact=False).first.wait_for()
            steps.shot("magics")

            # The kernel's help links: its manual, served by the Jupyter server.
            page.get_by_role("menuitem", name="Help").click()
            page.get_by_role("menuitem", name="ferrolab magics").wait_for()
            steps.shot("help-menu")
            page.keyboard.press("Escape")
            manual = page.request.get(f"{lab['url']}/kernelspecs/ferrolab/help.html?token={lab['token']}")
            assert manual.status == 200
            assert 'id="magics"' in manual.text()

            # A console on a subshell answers while the notebook's cell runs: the cell
            # waits for a file the test creates only after the console showed its answer.
            flag = Path(lab["root"]) / "release-the-notebook"
            run_cell(page, 'println!("training");\n'
                           f'while !std::path::Path::new("{flag}").exists() {{\n'
                           '    std::thread::sleep(std::time::Duration::from_millis(50));\n'
                           '}\n'
                           'println!("trained");')
            training = cell_output(page, 6)
            training.get_by_text("training", exact=True).wait_for()
            page.keyboard.press("Control+Shift+C")
            page.locator(".lm-CommandPalette-input").fill("New Subshell Console for Notebook")
            page.locator(".lm-CommandPalette-item", has_text="New Subshell Console for Notebook").first.click()
            prompt = page.locator(".jp-CodeConsole-promptCell .cm-content")
            prompt.wait_for()
            subshells.wait(page)
            prompt.click()
            page.keyboard.insert_text("%pwd")
            page.keyboard.press("Shift+Enter")
            page.locator(".jp-CodeConsole-content .jp-OutputArea").get_by_text(
                str(lab["root"]), exact=False).first.wait_for()
            # "training" and "trained" end up in one <pre>: match the word, not the element.
            assert training.get_by_text("trained").count() == 0
            steps.shot("subshell-console")
            flag.write_text("")
            # Close the console (Alt+W; JupyterLab then deletes its subshell) so the
            # notebook has its whole height again and the cell comes back into view.
            prompt.click()
            page.keyboard.press("Alt+w")
            prompt.wait_for(state="detached")
            page.locator(".jp-Notebook .jp-Cell").nth(6).scroll_into_view_if_needed()
            training.get_by_text("trained").wait_for()
        except Exception:
            steps.shot("failure")
            raise
        finally:
            browser.close()
    print(f"browser test took {time.monotonic() - started:.1f}s")
