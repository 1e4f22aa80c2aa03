"""Helpers for the gateway tests (Kernel Gateway, Enterprise Gateway): a server
process on a port it picked, and a kernel's websocket as JupyterLab speaks it
(JSON messages with a "channel" field).
"""

import contextlib
import datetime
import json
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests
import websocket  # websocket-client, a dependency of jupyter_server

from conftest import TIMEOUT, Outcome, listening_port

START_TIMEOUT = 60


class Server:
    """A server process started by a fixture, its log file, and the port it listens on."""

    def __init__(self, name, argv, env, cwd, log_dir, token):
        self.token = token
        self.name, self.log = name, Path(log_dir) / f"{name}.log"
        # Port 0: the OS picks a free port and we read it back from the listening
        # socket. A collision is still possible for jupyter_server (it probes the
        # port before listening), so a start that fails on the port is retried.
        for _ in range(3):
            with open(self.log, "w") as log:
                self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT)
            try:
                self.port = listening_port(self.process, START_TIMEOUT, self.log.read_text,
                                           exited_is_none=True)
            except BaseException:
                self.stop()
                raise
            if self.port is not None:
                return
            text = self.log.read_text(errors="replace")
            if "in use" not in text and "not available" not in text:
                break
        pytest.fail(f"{name} did not start ({argv}):\n{self.log.read_text(errors='replace')}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_answering(self, path, token):
        """Polls until the server answers `path` (its handlers are up once it listens)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                response = requests.get(self.url + path, headers=auth(token), timeout=5)
                if response.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"{self.name} never answered {path}:\n{self.log.read_text()}")
            time.sleep(0.1)

    def descendants(self):
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL) and kills anything it left behind."""
        left = self.descendants()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        kill_all(left)

    @contextlib.contextmanager
    def answering(self, path="/api/kernelspecs"):
        """The server once it answers `path` with its token; stopped when the block ends."""
        try:
            self.wait_answering(path, self.token)
            yield self
        finally:
            self.stop()


def kill_all(processes):
    """Kills these processes (those already gone are skipped) and waits for them."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


def auth(token):
    return {"Authorization": f"token {token}"}


class Channels:
    """The laptop server's kernel websocket: JSON messages with a "channel" field."""

    def __init__(self, server, kernel, token=None):
        self.session = uuid.uuid4().hex
        url = (f"ws://127.0.0.1:{server.port}/api/kernels/{kernel}/channels"
               f"?token={token or server.token}&session_id={self.session}")
        self.socket = websocket.create_connection(url, timeout=START_TIMEOUT)
        self.received = []  # (seconds since this connection, message) of every message read

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.socket.close()

    def send(self, msg_type, content, channel="shell"):
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "session": self.session, "username": "laptop",
                       "msg_type": msg_type, "version": "5.3",
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content, "buffers": [],
            "channel": channel,
        }))
        return msg_id

    def next(self, deadline):
        """The next message, or None when none came before the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.socket.settimeout(left)
        try:
            message = json.loads(self.socket.recv())
        except websocket.WebSocketTimeoutException:
            return None
        self.received.append(message)
        return message

    def wait_ready(self, timeout=START_TIMEOUT):
        """Asks for kernel_info until the kernel answers (it may still be starting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("kernel_info_request", {})
            ask_again = min(deadline, time.monotonic() + 2)
            while (message := self.next(ask_again)) is not None:
                if (message["msg_type"] == "kernel_info_reply"
                        and message["parent_header"].get("msg_id") == msg_id):
                    return message["content"]
        pytest.fail(f"no kernel_info_reply within {timeout}s")

    def start(self, code):
        return self.send("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})

    def finish(self, msg_id, timeout=TIMEOUT, outcome=None, seen=None):
        """Reads until the reply to `msg_id` and its idle status came."""
        outcome = outcome or Outcome(reply=None)
        deadline = time.monotonic() + timeout
        idle = False
        while not (idle and outcome.reply is not None):
            message = self.next(deadline)
            if message is None:
                raise TimeoutError(f"no reply/idle within {timeout}s; got {outcome.outputs}")
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if seen is not None:
                seen.append(kind)
            if kind == "execute_reply":
                outcome.reply = message
            elif kind == "status":
                idle = message["content"]["execution_state"] == "idle"
            elif kind != "execute_input":
                outcome.outputs.append((kind, message["content"]))
        return outcome

    def execute(self, code, timeout=TIMEOUT):
        return self.finish(self.start(code), timeout)
