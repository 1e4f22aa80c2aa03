"""Shared helpers for ferrolab's Python tests: real kernels through jupyter_client.

`./kernel test` installs the kernelspec under a private JUPYTER_PATH and points
FERROLAB_HISTORY_FILE at a scratch file before pytest starts, so these tests never
touch the user's own Jupyter setup.
"""

import hashlib
import os
import queue
import subprocess
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

import jupyter_client
import psutil
import pytest

ALLOWLIST = os.path.join(os.path.dirname(__file__), "skip_allowlist.txt")


def allowed_skips():
    """(text a skip reason contains, why it is acceptable) from skip_allowlist.txt."""
    with open(ALLOWLIST, encoding="utf-8") as listing:
        lines = [line.strip() for line in listing if line.strip() and not line.startswith("#")]
    return [tuple(part.strip() for part in line.split(" | ", 1)) for line in lines]


SKIPS = []  # (test id, reason) of every skipped test in this run


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        SKIPS.append((report.nodeid, reason))


def unexpected_skips():
    allowed = [text for text, _ in allowed_skips()]
    return [(node, reason) for node, reason in SKIPS if not any(text in reason for text in allowed)]


def pytest_sessionfinish(session, exitstatus):
    """No silent skips: a skip whose reason is not on the allow-list fails the run."""
    if unexpected_skips() and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    write = terminalreporter.write_line
    terminalreporter.section("skips")
    write("allowed skip reasons (tests/python/skip_allowlist.txt):")
    for text, why in allowed_skips():
        write(f"  {text!r}: {why}")
    unexpected = unexpected_skips()
    for node, reason in SKIPS:
        write(f"  {'NOT ALLOWED' if (node, reason) in unexpected else 'allowed'}: {node}: {reason}")
    write(f"{len(SKIPS)} skipped, {len(unexpected)} of them for a reason not on the list"
          + (": the run fails" if unexpected else ""), red=bool(unexpected))


def listening_port(process, timeout=60, describe=lambda: "", exited_is_none=False):
    """The TCP port a server started on port 0 listens on, read from the OS's socket
    table (so it is this process's socket, not another's that took the number): polled
    until it appears; fails the test if time runs out, or if the process exits first
    (then None instead with `exited_is_none`, for a caller that retries)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if exited_is_none:
                return None
            pytest.fail(f"the server exited before listening: {describe()}")
        try:
            sockets = psutil.Process(process.pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        listening = sorted(s.laddr.port for s in sockets if s.status == psutil.CONN_LISTEN)
        if listening:
            return listening[0]
        time.sleep(0.05)  # polling interval
    pytest.fail(f"the server was not listening after {timeout}s: {describe()}")


def pinned_venv_python(name, requirements):
    """The python of a venv of its own for a tool whose pins clash with requirements.txt
    (the official kaggle CLI, Enterprise Gateway), kept beside the cargo target dir and
    rebuilt when its requirements file changes."""
    root = Path(__file__).resolve().parents[2]
    home = Path(os.environ.get("CARGO_TARGET_DIR", root / "target")) / name
    python = home / "bin" / "python"
    wanted = hashlib.sha256(Path(requirements).read_bytes()).hexdigest()
    stamp = home / ".requirements.sha256"
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        venv.create(home, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
                       check=True, timeout=900)
        stamp.write_text(wanted)
    return python


KERNEL_NAME = os.environ.get("FERROLAB_TEST_KERNEL", "ferrolab")
# Generous: the first cell of a kernel compiles evcxr's crate and dependencies.
TIMEOUT = 180


@dataclass
class Outcome:
    """What one execute_request produced."""

    reply: dict
    outputs: list = field(default_factory=list)  # (msg_type, content) in order
    inputs: list = field(default_factory=list)  # input_request contents answered

    @property
    def status(self):
        return self.reply["content"]["status"]

    @property
    def content(self):
        return self.reply["content"]

    def of_type(self, msg_type):
        return [content for kind, content in self.outputs if kind == msg_type]

    def stream_text(self, name="stdout"):
        return "".join(c["text"] for c in self.of_type("stream") if c["name"] == name)

    def result_text(self):
        results = self.of_type("execute_result")
        return results[-1]["data"]["text/plain"] if results else None

    def error(self):
        errors = self.of_type("error")
        return errors[0] if errors else None


class Kernel:
    """A running ferrolab kernel and a blocking client."""

    def __init__(self, **manager_kwargs):
        env = manager_kwargs.pop("env", None)
        start_kwargs = {}
        if "cwd" in manager_kwargs:
            start_kwargs["cwd"] = str(manager_kwargs.pop("cwd"))
        if env is not None:
            start_kwargs["env"] = {**os.environ, **env}
        self.manager = jupyter_client.KernelManager(kernel_name=KERNEL_NAME, **manager_kwargs)
        start = time.monotonic()
        self.manager.start_kernel(**start_kwargs)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.ready_seconds = time.monotonic() - start

    def execute(self, code, timeout=TIMEOUT, allow_stdin=False, answers=None, **kwargs):
        """Runs a cell; answers input_requests from `answers` (a list)."""
        client = self.client
        msg_id = client.execute(code, allow_stdin=allow_stdin, **kwargs)
        outcome = Outcome(reply=None)
        deadline = time.monotonic() + timeout
        idle = False
        while not (idle and outcome.reply is not None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply/idle for {code!r} within {timeout}s")
            if answers is not None:
                try:
                    request = client.get_stdin_msg(timeout=0.01)
                    outcome.inputs.append(request["content"])
                    client.input(answers.pop(0))
                except queue.Empty:
                    pass
            if outcome.reply is None:
                try:
                    reply = client.get_shell_msg(timeout=0.01)
                    if reply["parent_header"].get("msg_id") == msg_id:
                        outcome.reply = reply
                except queue.Empty:
                    pass
            try:
                message = client.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "status":
                idle = message["content"]["execution_state"] == "idle"
            elif kind != "execute_input":
                outcome.outputs.append((kind, message["content"]))
        return outcome

    def shutdown(self):
        self.client.stop_channels()
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def kernel():
    running = Kernel()
    yield running
    running.shutdown()
