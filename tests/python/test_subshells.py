"""Kernel subshells (JEP 91, protocol 5.5), driven with raw protocol messages.

A client asks for a subshell on the control channel and sends shell requests with the
subshell's id in the header; the kernel runs them beside the main shell. Every test that
needs two things at once makes the main shell's Rust cell wait for a file the test creates
only after the subshell answered: if the subshell waited for the main shell, the test would
time out instead of passing.
"""

import queue
import time

import pytest

from conftest import TIMEOUT, Kernel


@pytest.fixture(scope="module")
def kernel():
    running = Kernel()
    yield running
    running.shutdown()


class Traffic:
    """Everything one client receives on shell, control and IOPub, in arrival order."""

    def __init__(self, client):
        self.client = client
        self.seen = []  # (channel, message)

    def send(self, channel, msg_type, content, subshell_id=None):
        message = self.client.session.msg(msg_type, content)
        if subshell_id is not None:
            message["header"]["subshell_id"] = subshell_id
        getattr(self.client, f"{channel}_channel").send(message)
        return message["header"]["msg_id"]

    def execute(self, code, subshell_id=None, allow_stdin=False):
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": allow_stdin, "stop_on_error": True}
        return self.send("shell", "execute_request", content, subshell_id)

    def pump(self):
        for channel in ("shell", "control", "iopub"):
            get = getattr(self.client, f"get_{channel}_msg")
            while True:
                try:
                    self.seen.append((channel, get(timeout=0.02)))
                except queue.Empty:
                    break

    def find(self, predicate):
        for index, (channel, message) in enumerate(self.seen):
            if predicate(channel, message):
                return index
        return None

    def wait(self, predicate, what, seconds=TIMEOUT):
        deadline = time.monotonic() + seconds
        while True:
            index = self.find(predicate)
            if index is not None:
                return index
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.pump()

    def reply_index(self, msg_id, channel="shell"):
        return self.find(lambda ch, m: ch == channel and m["parent_header"].get("msg_id") == msg_id)

    def reply(self, msg_id, channel="shell", seconds=TIMEOUT):
        index = self.wait(lambda ch, m: ch == channel and m["parent_header"].get("msg_id") == msg_id,
                          f"the {channel} reply to {msg_id}", seconds)
        return self.seen[index][1]

    def iopub(self, msg_id):
        return [m for ch, m in self.seen if ch == "iopub" and m["parent_header"].get("msg_id") == msg_id]

    def wait_idle(self, msg_id):
        self.wait(lambda ch, m: ch == "iopub" and m["parent_header"].get("msg_id") == msg_id
                  and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle",
                  f"idle after {msg_id}")

    def wait_stream(self, msg_id, text):
        self.wait(lambda ch, m: ch == "iopub" and m["parent_header"].get("msg_id") == msg_id
                  and m["msg_type"] == "stream" and text in m["content"]["text"],
                  f"{text!r} printed by {msg_id}")

    def wait_input(self, msg_id):
        """Until the kernel has taken the cell up (its `execute_input`): an interrupt reaches it now."""
        self.wait(lambda ch, m: ch == "iopub" and m["parent_header"].get("msg_id") == msg_id
                  and m["msg_type"] == "execute_input",
                  f"the input of {msg_id}")

    def stream_text(self, msg_id):
        return "".join(m["content"]["text"] for m in self.iopub(msg_id) if m["msg_type"] == "stream")

    def create_subshell(self):
        reply = self.reply(self.send("control", "create_subshell_request", {}), "control")
        assert reply["msg_type"] == "create_subshell_reply"
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply["content"]["subshell_id"]

    def list_subshells(self):
        reply = self.reply(self.send("control", "list_subshell_request", {}), "control")
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply["content"]["subshell_id"]

    def delete_subshell(self, subshell_id):
        msg_id = self.send("control", "delete_subshell_request", {"subshell_id": subshell_id})
        return self.reply(msg_id, "control")["content"]


def waiting_cell(flag, seconds=300):
    """A Rust cell that prints 'tick' and then runs until `flag` exists (at most `seconds`)."""
    return (
        'println!("tick");\n'
        f"for _ in 0..{seconds * 20} {{\n"
        f'    if std::path::Path::new("{flag}").exists() {{ break; }}\n'
        "    std::thread::sleep(std::time::Duration::from_millis(50));\n"
        "}\n"
        'println!("main shell done");'
    )


def test_kernel_info_announces_protocol_5_5_and_kernel_subshells(kernel):
    traffic = Traffic(kernel.client)
    reply = traffic.reply(traffic.send("shell", "kernel_info_request", {}))
    assert reply["content"]["protocol_version"] == "5.5"
    assert "kernel subshells" in reply["content"]["supported_features"]
    control = traffic.reply(traffic.send("control", "kernel_info_request", {}), "control")
    assert "kernel subshells" in control["content"]["supported_features"]


def test_subshells_are_created_listed_and_deleted_and_a_deleted_one_refuses_requests(kernel):
    traffic = Traffic(kernel.client)
    first, second = traffic.create_subshell(), traffic.create_subshell()
    assert first != second
    listed = traffic.list_subshells()
    assert listed.index(first) < listed.index(second)
    assert traffic.delete_subshell(first) == {"status": "ok"}
    listed = traffic.list_subshells()
    assert first not in listed and second in listed
    again = traffic.delete_subshell(first)
    assert again["status"] == "error" and again["ename"] == "SubshellNotFound", again
    # A request for a subshell that is gone is refused, not run on another shell.
    msg_id = traffic.execute("%pwd", subshell_id=first)
    reply = traffic.reply(msg_id)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "SubshellNotFound"
    traffic.wait_idle(msg_id)
    kinds = [m["msg_type"] for m in traffic.iopub(msg_id)]
    assert "execute_input" not in kinds and "execute_result" not in kinds, kinds
    assert all(m["parent_header"].get("subshell_id") == first for m in traffic.iopub(msg_id))
    assert traffic.delete_subshell(second) == {"status": "ok"}


def test_gpu_and_shell_answer_on_a_subshell_while_the_main_shell_runs_rust(kernel, tmp_path):
    traffic = Traffic(kernel.client)
    subshell = traffic.create_subshell()
    flag = tmp_path / "subshell-answered"
    main = traffic.execute(waiting_cell(flag))
    traffic.wait_stream(main, "tick")

    asked = [traffic.execute(code, subshell_id=subshell)
             for code in ("%gpu", "%pwd", "!echo from-the-subshell")]
    replies = [traffic.reply(msg_id) for msg_id in asked]
    for msg_id in asked:
        traffic.wait_idle(msg_id)
    # The main shell's cell is still running: it ends only once the flag exists.
    assert traffic.reply_index(main) is None
    assert [r["content"]["status"] for r in replies] == ["ok", "ok", "ok"], replies
    # The subshell counts its own cells.
    assert [r["content"]["execution_count"] for r in replies] == [1, 2, 3]
    gpu_text = "".join(
        str(m["content"].get("data", {}).get("text/plain", "")) + m["content"].get("text", "")
        for m in traffic.iopub(asked[0]))
    assert "GPU" in gpu_text or "gpu" in gpu_text, gpu_text
    pwd = [m for m in traffic.iopub(asked[1]) if m["msg_type"] == "execute_result"]
    assert pwd and pwd[0]["content"]["data"]["text/plain"].strip("'\"")
    assert "from-the-subshell" in traffic.stream_text(asked[2])
    for msg_id in asked:
        states = [m["content"]["execution_state"] for m in traffic.iopub(msg_id) if m["msg_type"] == "status"]
        assert states == ["busy", "idle"], states
        assert all(m["parent_header"].get("subshell_id") == subshell for m in traffic.iopub(msg_id))

    flag.write_text("")
    main_reply = traffic.reply(main)
    assert main_reply["content"]["status"] == "ok", main_reply["content"]
    traffic.wait_idle(main)
    assert "main shell done" in traffic.stream_text(main)
    assert traffic.delete_subshell(subshell) == {"status": "ok"}


def test_a_rust_cell_on_a_subshell_waits_for_its_turn_and_shares_the_variables(kernel, tmp_path):
    assert kernel.execute("let subshell_shared = 41;").status == "ok"
    traffic = Traffic(kernel.client)
    rust_subshell, magic_subshell = traffic.create_subshell(), traffic.create_subshell()
    flag = tmp_path / "release-the-main-shell"
    main = traffic.execute(waiting_cell(flag))
    traffic.wait_stream(main, "tick")

    waiting = traffic.execute("subshell_shared + 1", subshell_id=rust_subshell)
    quick = traffic.execute("%pwd", subshell_id=magic_subshell)
    traffic.reply(quick)
    # The Rust cell waits for the engine; the other subshell's magic did not.
    assert traffic.reply_index(waiting) is None and traffic.reply_index(main) is None

    flag.write_text("")
    answer = traffic.reply(waiting)
    assert traffic.reply_index(main) < traffic.find(
        lambda ch, m: ch == "shell" and m["parent_header"].get("msg_id") == waiting)
    assert answer["content"]["status"] == "ok", answer["content"]
    traffic.wait_idle(waiting)
    results = [m for m in traffic.iopub(waiting) if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == "42"
    for subshell in (rust_subshell, magic_subshell):
        assert traffic.delete_subshell(subshell) == {"status": "ok"}


def test_an_interrupt_stops_the_cells_of_every_shell_and_the_kernel_goes_on(kernel):
    traffic = Traffic(kernel.client)
    rust_subshell, shell_subshell = traffic.create_subshell(), traffic.create_subshell()
    main = traffic.execute(waiting_cell("/nonexistent/never-created"))
    traffic.wait_stream(main, "tick")
    command = traffic.execute("!echo started; sleep 120", subshell_id=shell_subshell)
    traffic.wait_stream(command, "started")
    queued = traffic.execute("1 + 1", subshell_id=rust_subshell)
    traffic.wait_input(queued)  # taken up, waiting for the main shell's Rust turn

    interrupt = traffic.send("control", "interrupt_request", {})
    assert traffic.reply(interrupt, "control")["content"]["status"] == "ok"
    main_reply = traffic.reply(main)["content"]
    assert main_reply["status"] == "error" and main_reply["ename"] == "Interrupted", main_reply
    queued_reply = traffic.reply(queued)["content"]
    assert queued_reply["status"] == "error" and queued_reply["ename"] == "Interrupted", queued_reply
    assert "before its code ran" in queued_reply["evalue"]
    traffic.reply(command)
    traffic.wait_idle(command)
    assert "SIGINT" in traffic.stream_text(command)

    after = traffic.execute("40 + 2", subshell_id=rust_subshell)
    assert traffic.reply(after)["content"]["status"] == "ok"
    traffic.wait_idle(after)
    results = [m for m in traffic.iopub(after) if m["msg_type"] == "execute_result"]
    assert results and results[0]["content"]["data"]["text/plain"] == "42"
    for subshell in (rust_subshell, shell_subshell):
        assert traffic.delete_subshell(subshell) == {"status": "ok"}


def test_input_on_a_subshell_is_asked_with_its_id_and_answered(kernel):
    traffic = Traffic(kernel.client)
    subshell = traffic.create_subshell()
    msg_id = traffic.execute('ferrolab::input("name")', subshell_id=subshell, allow_stdin=True)
    request = kernel.client.get_stdin_msg(timeout=TIMEOUT)
    assert request["msg_type"] == "input_request"
    assert request["header"].get("subshell_id") == subshell
    assert request["parent_header"]["msg_id"] == msg_id
    kernel.client.input("Ferris")
    assert traffic.reply(msg_id)["content"]["status"] == "ok"
    traffic.wait_idle(msg_id)
    results = [m for m in traffic.iopub(msg_id) if m["msg_type"] == "execute_result"]
    assert results and "Ferris" in results[0]["content"]["data"]["text/plain"]
    assert traffic.delete_subshell(subshell) == {"status": "ok"}
