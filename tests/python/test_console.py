"""jupyter console (prompt_toolkit, a real terminal in tmux) on ferrolab: a
multi-line `fn` is continued (is_complete), Tab completion offers a variable
name, and Ctrl-C interrupts `loop {}` with the console still usable."""

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

TIMEOUT = 180


class Terminal:
    """A tmux session running one command; the screen is read as plain text."""

    def __init__(self, command):
        if shutil.which("tmux") is None:
            pytest.fail("tmux is missing: `./kernel test` installs Debian's tmux package")
        self.name = f"ferrolab-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "60", command],
                       check=True, env=os.environ)

    def keys(self, *keys):
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def type(self, text):
        # tmux reads a trailing `;` as its own command separator unless escaped.
        if text.endswith(";"):
            text = text[:-1] + "\\;"
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)

    def screen(self):
        result = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", self.name, "-S", "-2000"],
                                capture_output=True, text=True)
        return result.stdout

    def wait_for(self, pattern, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen, re.M):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared; the screen was:\n{self.screen()}")

    def ended(self):
        """True once the command has exited (tmux then ends the session)."""
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode != 0

    def quit_console(self, timeout=30):
        """Ctrl-D, `y` to the console's exit question once it is asked, then waits
        until the console has exited (it shuts its kernel down first). A teardown:
        it never raises, so a test's own failure is what gets reported."""
        subprocess.run(["tmux", "send-keys", "-t", self.name, "C-d"], capture_output=True)
        try:
            self.wait_for(r"Do you really want to exit", timeout=timeout)
        except AssertionError:
            pass
        else:
            subprocess.run(["tmux", "send-keys", "-t", self.name, "y", "Enter"], capture_output=True)
        deadline = time.monotonic() + timeout
        while not self.ended() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.close()

    def close(self):
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def prompts(screen):
    return [int(n) for n in re.findall(r"^In \[(\d+)\]:", screen, re.M)]


def test_console_continuation_completion_and_interrupt():
    terminal = Terminal(f"{sys.executable} -m jupyter_console --kernel ferrolab")
    try:
        terminal.wait_for(r"^In \[1\]:")
        # An open brace asks for more lines (prompt_toolkit shows `...:`).
        terminal.type("fn double(x: i32) -> i32 {")
        terminal.keys("Enter")
        terminal.wait_for(r"^\s+\.\.\.:")
        terminal.type("x * 2")
        terminal.keys("Enter")
        terminal.type("}")
        terminal.keys("Enter")
        terminal.wait_for(r"^In \[2\]:")
        terminal.type("double(21)")
        terminal.keys("Enter")
        terminal.wait_for(r"^Out\[2\]: 42")

        terminal.type("let value_for_tab = 5;")
        terminal.keys("Enter")
        terminal.wait_for(r"^In \[4\]:")
        terminal.type("value_fo")
        terminal.keys("Tab")
        terminal.wait_for(r"^In \[4\]: value_for_tab")
        terminal.keys("Enter")
        terminal.wait_for(r"^Out\[4\]: 5")

        terminal.type('println!("spinning"); loop { std::hint::spin_loop(); }')
        terminal.keys("Enter")
        terminal.wait_for(r"^spinning")
        terminal.keys("C-c")
        terminal.wait_for(r"Interrupted")
        terminal.wait_for(r"^In \[6\]:")
        terminal.type("1 + 2")
        terminal.keys("Enter")
        terminal.wait_for(r"^Out\[6\]: 3")
        assert prompts(terminal.screen())[-1] == 7 or re.search(r"^In \[7\]:", terminal.screen(), re.M)
    finally:
        terminal.quit_console()


def test_a_console_attached_to_a_running_kernel_shares_iopub_with_the_other_client():
    from conftest import Kernel

    running = Kernel()  # started the way the Jupyter server starts kernels
    terminal = None
    try:
        assert running.execute("let shared = 41;\nshared").result_text() == "41"
        connection_file = running.manager.connection_file
        terminal = Terminal(
            f"{sys.executable} -m jupyter_console --existing {connection_file} "
            "--ZMQTerminalInteractiveShell.include_other_output=True")
        terminal.wait_for(r"^In \[\d+\]:")
        # A cell from the other client shows in the console...
        outcome = running.execute('println!("from the notebook client {}", shared + 1);')
        assert outcome.stream_text() == "from the notebook client 42\n"
        terminal.wait_for(r"from the notebook client 42")
        # ...and a cell typed in the console reaches the other client's IOPub.
        terminal.type('println!("typed in the console {}", shared * 2);')
        terminal.keys("Enter")
        terminal.wait_for(r"^typed in the console 82", timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        seen = ""
        while "typed in the console 82" not in seen and time.monotonic() < deadline:
            try:
                message = running.client.get_iopub_msg(timeout=1)
            except Exception:
                continue
            if message["msg_type"] == "stream":
                seen += message["content"]["text"]
        assert "typed in the console 82" in seen
    finally:
        if terminal is not None:
            terminal.close()
        running.shutdown()
