"""Behaviour of the kernel core through jupyter_client: what a finished kernel does
when cells fail, are interrupted, read stdin, flood output, or the kernel restarts.

One kernel serves the whole module (the slow part of a cell is evcxr's compile);
tests that damage the runtime come last and check that the kernel recovers.
"""

import glob
import os
import signal
import tempfile
import time

import pytest
from jupyter_client.session import Session

from conftest import Kernel, TIMEOUT

# What the kernel logs (at info level) once it has taken a SIGINT.
SIGINT_TAKEN = "SIGINT: interrupting the running cell"
# What it logs once an interrupt has marked the current cell interrupted.
INTERRUPT_MARKED = "interrupt: the current cell is marked interrupted"


@pytest.fixture(scope="module")
def kernel_log(tmp_path_factory):
    return tmp_path_factory.mktemp("behaviour") / "kernel.log"


@pytest.fixture(scope="module")
def kernel(kernel_log):
    """The module's kernel, logging at info level to `kernel_log`, so a test can
    wait for an event the kernel only logs (it survives the restart test)."""
    running = Kernel(env={"FERROLAB_LOG_FILE": str(kernel_log), "FERROLAB_LOG": "info"})
    yield running
    running.shutdown()


def wait_for_log_count(log_file, line, count, seconds=60):
    """Waits until `line` appears `count` times in the log (a liveness bound)."""
    deadline = time.monotonic() + seconds
    while log_file.read_text(errors="replace").count(line) < count:
        assert time.monotonic() < deadline, f"the kernel never logged {line!r} ({count} times)"
        time.sleep(0.02)


def shell_replies(client, count):
    """The next `count` shell replies, by the msg_id of the request each answers."""
    replies = {}
    while len(replies) < count:
        reply = client.get_shell_msg(timeout=TIMEOUT)
        replies[reply["parent_header"]["msg_id"]] = reply["content"]
    return replies


def test_state_and_display_across_cells(kernel):
    assert kernel.execute("let base = 40;").status == "ok"
    outcome = kernel.execute("base + 2")
    assert outcome.status == "ok"
    assert outcome.result_text() == "42"
    assert outcome.content["execution_count"] == outcome.of_type("execute_result")[0]["execution_count"]


def test_trailing_println_shows_output_but_no_unit_result(kernel):
    outcome = kernel.execute('println!("only output")')
    assert outcome.stream_text() == "only output\n"
    assert outcome.of_type("execute_result") == []


def test_compile_error_is_one_error_pointing_at_the_user_line(kernel):
    kernel.execute("let kept = 3;")
    outcome = kernel.execute("let a = 1;\nkept + not_defined")
    assert outcome.status == "error"
    assert [kind for kind, _ in outcome.outputs] == ["error"]
    error = outcome.error()
    assert error["ename"] == "CompileError"
    assert "E0425" in error["evalue"] and "not_defined" in error["evalue"]
    traceback = "\n".join(error["traceback"])
    assert "cell:2:8" in traceback
    assert "kept + not_defined" in traceback
    assert "evcxr" not in traceback.lower()
    # Earlier variables survive a failed compile.
    assert kernel.execute("kept").result_text() == "3"


def test_panic_is_an_error_and_earlier_variables_survive(kernel):
    kernel.execute("let survivor = 7;")
    outcome = kernel.execute('let doomed_in_cell = 1; panic!("boom {}", 1 + 1)')
    assert outcome.status == "error"
    error = outcome.error()
    assert error["ename"] == "panic"
    assert error["evalue"] == "boom 2"
    assert kernel.execute("survivor").result_text() == "7"


def test_queued_executes_are_aborted_after_an_error(kernel):
    client = kernel.client
    failing = client.execute("no_such_name_here")
    queued = [client.execute("1 + 1"), client.execute("2 + 2")]
    replies = shell_replies(client, 3)
    assert replies[failing]["status"] == "error"
    assert [replies[msg_id]["status"] for msg_id in queued] == ["aborted", "aborted"]
    # Aborting stops with the queue: the next request runs normally.
    assert kernel.execute("3 + 3").result_text() == "6"


def test_stop_on_error_false_does_not_abort(kernel):
    client = kernel.client
    failing = client.execute("still_not_defined", stop_on_error=False)
    after = client.execute("5 + 5")
    replies = shell_replies(client, 2)
    assert replies[failing]["status"] == "error"
    assert replies[after]["status"] == "ok"


def test_partial_line_arrives_while_the_cell_still_runs(kernel, tmp_path):
    client = kernel.client
    go_on = tmp_path / "go-on"
    # The cell prints a partial line, then waits until the test creates `go_on`.
    msg_id = client.execute(
        f'print!("progress 50%"); while !std::path::Path::new("{go_on}").exists() {{ '
        'std::thread::sleep(std::time::Duration::from_millis(20)); } println!(" done");'
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        seen_partial = False
        while time.monotonic() < deadline:
            message = client.get_iopub_msg(timeout=TIMEOUT)
            if message["parent_header"].get("msg_id") != msg_id or message["msg_type"] != "stream":
                continue
            if message["content"]["text"] == "progress 50%":
                seen_partial = True
                # The cell cannot finish before `go_on` exists, so no reply can exist yet.
                assert not client.shell_channel.msg_ready()
                break
        assert seen_partial
    finally:
        go_on.touch()
    reply = client.get_shell_msg(timeout=TIMEOUT)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "ok"


def test_two_thousand_lines_are_batched_and_complete(kernel):
    outcome = kernel.execute('for i in 0..2000 { println!("line {i}"); }')
    streams = outcome.of_type("stream")
    text = "".join(s["text"] for s in streams)
    assert text.splitlines() == [f"line {i}" for i in range(2000)]
    assert len(streams) <= 20, f"{len(streams)} stream messages for 2000 lines"


def test_stdout_and_stderr_keep_their_streams(kernel):
    outcome = kernel.execute('println!("to out"); eprintln!("to err"); 1')
    assert outcome.stream_text("stdout") == "to out\n"
    assert outcome.stream_text("stderr") == "to err\n"
    assert outcome.result_text() == "1"


def test_plain_stdin_read_gets_the_users_line(kernel):
    code = (
        "let mut line = String::new();\n"
        'print!("Name: ");\n'
        "std::io::stdin().read_line(&mut line).unwrap();\n"
        "line.trim().to_uppercase()"
    )
    outcome = kernel.execute(code, allow_stdin=True, answers=["ferris"])
    assert outcome.status == "ok", outcome.outputs
    assert len(outcome.inputs) == 1
    assert outcome.result_text() == '"FERRIS"'


def test_password_and_input_helpers(kernel):
    code = 'let token = ferrolab::password("Kaggle key: ");\nlet user = ferrolab::input("user");\nformat!("{user}:{}", token.len())'
    outcome = kernel.execute(code, allow_stdin=True, answers=["s3cret", "ferris"])
    assert [request["password"] for request in outcome.inputs] == [True, False]
    assert outcome.inputs[0]["prompt"] == "Kaggle key"
    assert outcome.result_text() == '"ferris:6"'
    # The secret never appears in the cell's output.
    assert "s3cret" not in str(outcome.outputs)


def test_stdin_read_without_frontend_input_does_not_hang(kernel):
    code = "let mut line = String::new();\nstd::io::stdin().read_line(&mut line).unwrap();\nline.len()"
    outcome = kernel.execute(code, allow_stdin=False, timeout=60)
    assert outcome.status == "ok"
    assert "allow_stdin" in outcome.stream_text("stderr")


def test_rich_display_during_the_cell(kernel):
    outcome = kernel.execute(
        'ferrolab::display_with_id("progress", "text/plain", "0%");\n'
        'ferrolab::update_display("progress", "text/plain", "100%");\n'
        'ferrolab::display_markdown("**done**");'
    )
    kinds = [kind for kind, _ in outcome.outputs]
    assert kinds == ["display_data", "update_display_data", "display_data"]
    assert outcome.outputs[1][1]["transient"]["display_id"] == "progress"
    assert outcome.outputs[2][1]["data"]["text/markdown"] == "**done**"


def test_trailing_value_with_custom_html_display(kernel):
    code = (
        "struct Table(Vec<(&'static str, f64)>);\n"
        "impl Table {\n"
        "    fn evcxr_display(&self) {\n"
        '        let rows: String = self.0.iter().map(|(k, v)| format!("<tr><td>{k}</td><td>{v}</td></tr>")).collect();\n'
        '        println!("EVCXR_BEGIN_CONTENT text/html\\n<table>{rows}</table>\\nEVCXR_END_CONTENT");\n'
        "    }\n"
        "}\n"
        'Table(vec![("loss", 0.25)])'
    )
    outcome = kernel.execute(code)
    assert outcome.status == "ok", outcome.outputs
    data = outcome.of_type("execute_result")[0]["data"]
    assert data["text/html"] == "<table><tr><td>loss</td><td>0.25</td></tr></table>"


# One compile per expression cell (src/engine/one_compile.rs): a cell's final
# value is shown by a rewritten statement, not by evcxr's two-compile probing.
# A second kernel with the rewrite switched off (FERROLAB_ONE_COMPILE=0) is
# evcxr's own path: every case must come out of both identically.
@pytest.fixture(scope="module")
def evcxr_path_kernel():
    running = Kernel(env={"FERROLAB_ONE_COMPILE": "0"})
    yield running
    running.shutdown()


ONE_COMPILE_TYPES = (
    "#[derive(Debug)]\n"
    "struct Html(u8);\n"
    "impl Html {\n"
    '    fn evcxr_display(&self) { println!("EVCXR_BEGIN_CONTENT text/html\\n<b>{}</b>\\nEVCXR_END_CONTENT", self.0); }\n'
    "}\n"
    "struct Opaque;\n"
    "let kept_text = String::from(\"kept\");"
)


@pytest.mark.parametrize(
    "code",
    [
        "40 + 2",
        'String::from("a \\"quoted\\" string")',
        "Html(7)",
        "()",
        'println!("printed")',
        "vec![Some(1.5), None]",
        "kept_text",
        "Opaque",
        "undefined_name + 1",
        "let x = 1;\nx +",
    ],
)
def test_final_values_are_shown_as_evcxr_shows_them(kernel, evcxr_path_kernel, code):
    outcomes = []
    for running in (kernel, evcxr_path_kernel):
        assert running.execute(ONE_COMPILE_TYPES).status == "ok"
        outcomes.append(running.execute(code))
    one, evcxr = outcomes
    assert one.status == evcxr.status
    assert comparable(one) == comparable(evcxr)


def comparable(outcome):
    """Outputs without what differs between two kernels anyway: the execution
    count, and line numbers of evcxr's generated source (`src/lib.rs:N`) in an
    error that is not in the user's code."""
    shown = []
    for kind, content in outcome.outputs:
        if kind == "error":
            generated = any("src/lib.rs" in line for line in content["traceback"])
            lines = None if generated else content["traceback"]
            shown.append((kind, content["ename"], content["evalue"], lines))
        else:
            shown.append((kind, content.get("data"), content.get("metadata"), content.get("text")))
    return shown


def test_one_compile_shows_own_display_and_debug(kernel):
    assert kernel.execute(ONE_COMPILE_TYPES).status == "ok"
    html = kernel.execute("Html(7)").of_type("execute_result")[0]["data"]
    assert html["text/html"] == "<b>7</b>"
    assert kernel.execute("kept_text").result_text() == '"kept"'
    # Showing a variable borrows it, as under evcxr: it is still there.
    assert kernel.execute("kept_text.len()").result_text() == "4"
    assert kernel.execute("()").of_type("execute_result") == []
    opaque = kernel.execute("Opaque")
    assert opaque.status == "error" and "Debug" in opaque.error()["evalue"]


def test_a_final_expression_that_moves_a_variable_moves_it_on_both_paths(kernel, evcxr_path_kernel):
    for running in (kernel, evcxr_path_kernel):
        assert running.execute('let moved_away = String::from("gone");').status == "ok"
        assert running.execute("{ moved_away }").result_text() == '"gone"'
        after = running.execute("moved_away")
        assert after.status == "error" and "E0425" in after.error()["evalue"]


def test_an_expression_cell_compiles_once(kernel, evcxr_path_kernel):
    # evcxr's `:timing` names its phases; "Fallback" is the failed
    # `evcxr_display` compile that the one-compile path avoids.
    timed = []
    for running in (kernel, evcxr_path_kernel):
        running.execute("let timed = 1;")
        assert "Timing: true" in running.execute(":timing").result_text()
        try:
            timed.append(running.execute("timed + 1"))
        finally:
            assert "Timing: false" in running.execute(":timing").result_text()
    one, evcxr = timed
    assert one.result_text() == evcxr.result_text() == "2"
    assert "Took" in one.stream_text() and "Fallback" not in one.stream_text()
    assert "Fallback" in evcxr.stream_text()


def test_a_cell_that_adds_a_crate_and_shows_a_value_compiles_once(evcxr_path_kernel):
    # Leading `:dep` lines stay; the value after them is shown by the one-compile
    # statement, so the build that brings the crate in is not followed by a second.
    # A kernel of its own: a first `:dep` also brings the checkpoint runtime's
    # crates, which other tests of the shared kernel see being compiled.
    cell = ':dep ryu = "1"\nryu::Buffer::new().format(1.5).len()'
    own = Kernel()
    timed = []
    try:
        for running in (own, evcxr_path_kernel):
            assert "Timing: true" in running.execute(":timing").result_text()
            try:
                timed.append(running.execute(cell))
            finally:
                assert "Timing: false" in running.execute(":timing").result_text()
    finally:
        own.shutdown()
    one, evcxr = timed
    assert one.status == evcxr.status == "ok", (one.outputs, evcxr.outputs)
    assert one.result_text() == evcxr.result_text() == "3"
    assert "Took" in one.stream_text() and "Fallback" not in one.stream_text()
    assert "Fallback" in evcxr.stream_text()


def test_changed_display_settings_turn_the_one_compile_path_off(kernel):
    assert kernel.execute(":fmt {:#?}").status == "ok"
    try:
        pretty = kernel.execute("(1, 2)")
    finally:
        kernel.execute(":fmt {:?}")
    assert pretty.result_text() == "(\n    1,\n    2,\n)"
    assert kernel.execute("(1, 2)").result_text() == "(1, 2)"
    assert kernel.execute(":types").status == "ok"
    try:
        typed = kernel.execute("3u8")
    finally:
        kernel.execute(":types")
    assert typed.result_text() == ": u8 = 3"
    assert kernel.execute("3u8").result_text() == "3"


def test_evcxr_commands_work(kernel):
    kernel.execute("let listed_variable: u8 = 5;")
    outcome = kernel.execute(":vars")
    assert outcome.status == "ok"
    assert "listed_variable" in outcome.result_text()
    assert "u8" in outcome.result_text()


def test_dep_build_streams_progress(kernel):
    outcome = kernel.execute(':dep itoa = "1"\nlet mut buffer = itoa::Buffer::new();\nbuffer.format(2026).to_string()')
    assert outcome.status == "ok", outcome.outputs
    assert "Compiling itoa" in outcome.stream_text("stderr")
    assert outcome.result_text() == '"2026"'


def test_rust_analyzer_is_not_given_the_checkpoint_runtime_but_the_users_crates(kernel):
    # A cell with a :dep brings ferrolab's checkpoint runtime along (or it came
    # with an earlier one); the compiler sees it, and so does the user's code.
    outcome = kernel.execute(':dep fnv = "1"\nfnv::FnvHashMap::<u8, u8>::default().len()')
    assert outcome.status == "ok", outcome.outputs
    assert outcome.result_text() == "0"
    assert kernel.execute('ferrolab_checkpoint::manifest::is_identifier("x")').result_text() == "true"
    # rust-analyzer (completions, the types of new variables) knows the user's
    # crate, and is not given the runtime: analysing it cost ≈ 0.7 s of every
    # first :dep cell.
    def matches(code):
        reply = kernel.client.complete(code, cursor_pos=len(code), reply=True, timeout=TIMEOUT)["content"]
        return reply["matches"]
    assert any(match.startswith("FnvHashMap") for match in matches("fnv::FnvHash"))
    assert matches("ferrolab_checkpoint::manifest::is_ident") == []
    outcome = kernel.execute("let via_the_users_crate = fnv::FnvHashMap::<u8, u8>::default();")
    assert outcome.status == "ok", outcome.outputs
    assert "via_the_users_crate" in kernel.execute(":vars").result_text()


def test_completion_and_inspect_count_code_points(kernel):
    kernel.execute("let café_total = 1;")
    code = 'let s = "é✓"; café_to'
    reply = kernel.client.complete(code, cursor_pos=len(code), reply=True, timeout=TIMEOUT)["content"]
    assert "café_total" in reply["matches"]
    assert reply["cursor_end"] == len(code)
    assert code[reply["cursor_start"]:reply["cursor_end"]] == "café_to"
    inspect = kernel.client.inspect("String::new", cursor_pos=11, reply=True, timeout=TIMEOUT)["content"]
    assert inspect["found"] is True
    assert "String" in inspect["data"]["text/plain"]


def test_help_query_pages_documentation(kernel):
    outcome = kernel.execute("std::fs::read_to_string?")
    payload = outcome.content["payload"]
    assert len(payload) == 1 and payload[0]["source"] == "page"
    assert "Reads the entire contents of a file" in payload[0]["data"]["text/plain"]


def test_forged_execute_is_dropped_and_logged_without_the_key(tmp_path):
    log_file = tmp_path / "kernel.log"
    marker = tmp_path / "forged-ran"
    running = Kernel(env={"FERROLAB_LOG_FILE": str(log_file), "FERROLAB_LOG": "info"})
    try:
        key = running.manager.session.key
        forger = Session(key=b"not-the-key", username="mallory")
        code = f'std::fs::write("{marker}", "x").unwrap();'
        forger.send(running.client.shell_channel.socket, "execute_request",
                    content={"code": code, "silent": False, "store_history": True,
                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        # The kernel keeps serving: a signed request after the forged one runs.
        assert running.execute("40 + 2").result_text() == "42"
        assert not marker.exists()
        log = log_file.read_text()
        assert "dropped a message" in log and "signature does not match" in log
        assert key.decode() not in log
    finally:
        running.shutdown()


def test_ipc_transport():
    running = Kernel(transport="ipc")
    try:
        assert running.manager.transport == "ipc"
        assert running.execute("21 * 2").result_text() == "42"
    finally:
        running.shutdown()


def test_comm_open_for_unknown_target_is_closed(kernel):
    client = kernel.client
    message = client.session.msg("comm_open", {"comm_id": "c-123", "target_name": "nobody", "data": {}})
    client.shell_channel.send(message)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = client.get_iopub_msg(timeout=30)
        if reply["msg_type"] == "comm_close":
            assert reply["content"]["comm_id"] == "c-123"
            return
    pytest.fail("no comm_close for an unknown comm target")


def test_control_channel_kernel_info_and_usage(kernel):
    client = kernel.client
    for msg_type in ("kernel_info_request", "usage_request"):
        message = client.session.msg(msg_type, {})
        client.control_channel.send(message)
        reply = client.get_control_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == message["header"]["msg_id"]
        if msg_type == "kernel_info_request":
            assert reply["content"]["implementation"] == "ferrolab"
            assert reply["content"]["language_info"]["name"] == "rust"
        else:
            assert reply["content"]["pid"] == kernel.manager.provisioner.process.pid
            assert reply["content"]["kernel_memory"] > 0
            assert reply["content"]["host_virtual_memory"]["total"] > 0


def test_history_survives_a_restart(kernel):
    kernel.execute("let history_marker_cell = 1;")
    kernel.manager.restart_kernel()
    kernel.client.wait_for_ready(timeout=60)
    reply = kernel.client.history(hist_access_type="search", pattern="let history_marker_cell*",
                                  reply=True, timeout=30)["content"]
    assert reply["status"] == "ok"
    assert any(entry[2] == "let history_marker_cell = 1;" for entry in reply["history"])
    # And the restarted kernel runs cells.
    assert kernel.execute("1 + 2").result_text() == "3"


def test_sigint_interrupts_like_the_message_and_never_kills_the_kernel(kernel, kernel_log):
    client = kernel.client
    # While idle: nothing to stop, and the session is untouched. The next request
    # goes only once the kernel has logged that it took the signal, so the
    # signal cannot land on that request's cell instead.
    kernel.execute("let still_here = 9;")
    taken = kernel_log.read_text(errors="replace").count(SIGINT_TAKEN)
    os.kill(kernel.manager.provisioner.process.pid, signal.SIGINT)
    wait_for_log_count(kernel_log, SIGINT_TAKEN, taken + 1)
    assert kernel.execute("still_here").result_text() == "9"
    # While a cell runs: the signal interrupts it, as interrupt_request does.
    msg_id = client.execute('println!("spinning"); loop { std::hint::spin_loop(); }')
    while True:
        message = client.get_iopub_msg(timeout=TIMEOUT)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            break
    os.kill(kernel.manager.provisioner.process.pid, signal.SIGINT)
    reply = client.get_shell_msg(timeout=60)
    assert reply["content"]["ename"] == "Interrupted"
    assert kernel.manager.is_alive()
    assert kernel.execute("1 + 1").result_text() == "2"


def test_an_error_returned_through_question_mark_fails_the_cell(kernel):
    # evcxr prints the error and calls the cell a success, so Run All went on
    # past a failed training cell. The cell must fail, as an exception does in
    # Python; the queue behind it is aborted; earlier variables stay.
    kernel.execute("let before_question = 1;")
    client = kernel.client
    failing = client.execute('let made_here = 5;\nlet parsed: i32 = "x7".parse()?;\nparsed')
    queued = client.execute("before_question + 1")
    replies = shell_replies(client, 2)
    assert replies[failing]["status"] == "error"
    assert replies[failing]["ename"] == "Error" and "`?`" in replies[failing]["evalue"]
    assert replies[queued]["status"] == "aborted"
    assert kernel.execute("before_question").result_text() == "1"
    assert kernel.execute("made_here").status == "error"
    # The error itself was printed on stderr, where evcxr puts it.
    outcome = kernel.execute('let again: i32 = "y".parse()?;')
    assert outcome.status == "error"
    assert "invalid digit" in outcome.stream_text("stderr")


def test_interrupt_stops_an_endless_loop_and_names_lost_variables(kernel):
    kernel.execute("let lost_on_interrupt = vec![1, 2, 3];")
    client = kernel.client
    msg_id = client.execute('println!("looping"); loop { std::hint::spin_loop(); }')
    while True:
        message = client.get_iopub_msg(timeout=TIMEOUT)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            break
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=60)
    print(f"interrupt -> reply in {time.monotonic() - started:.2f}s")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "Interrupted"
    assert "lost_on_interrupt" in reply["content"]["evalue"]
    # The next cell works, and display helpers are back in the new runtime.
    assert kernel.execute("2 * 21").result_text() == "42"
    assert kernel.execute('ferrolab::display_html("<i>back</i>")').of_type("display_data")


def test_interrupt_during_a_build_stops_cargo_and_keeps_variables(kernel):
    kernel.execute("let kept_through_build = 11;")
    client = kernel.client
    # regex and its dependencies take many seconds to build: interrupt as soon
    # as cargo reports the first crate.
    msg_id = client.execute(':dep regex = "1"\nregex::Regex::new("a+").unwrap().is_match("aaa")')
    while True:
        message = client.get_iopub_msg(timeout=TIMEOUT)
        if (message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream"
                and "Compiling" in message["content"]["text"]):
            break
    kernel.manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "Interrupted"
    assert "no variables were lost" in reply["content"]["evalue"]
    assert kernel.manager.is_alive()
    assert kernel.execute("kept_through_build").result_text() == "11"


def slow_build_cell(salt, marker, statements=25):
    """A cell whose build takes seconds here (many distinct iterator chains
    compiled at opt-level 2) and whose code, once it runs, first creates
    `marker`. `salt` makes each cell's code new, so every one is built."""
    chains = "\n".join(
        f"let _h{i} = (0..{i + salt}u64).map(|x| x.wrapping_mul({i * 7 + salt}))"
        f".filter(|x| x % 3 == 0).map(|x| format!(\"{{x}}\")).collect::<Vec<String>>().len();"
        for i in range(statements))
    return f'std::fs::write("{marker}", "").unwrap();\n{{\n{chains}\n}}'


def reply_to(kernel, msg_id):
    while True:
        reply = kernel.client.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def test_an_interrupt_at_any_moment_before_user_code_keeps_every_variable(kernel, kernel_log, tmp_path):
    kernel.execute("let keep = 7;")
    started = time.monotonic()
    assert kernel.execute(slow_build_cell(1, tmp_path / "whole")).status == "ok"
    build = time.monotonic() - started
    print(f"one uninterrupted build: {build:.2f}s")
    # From the first instant (rust-analyzer, before cargo) to past the end of
    # the build; each cell is new code, so each is built.
    fractions = [0, 0.03, 0.08, 0.15, 0.25, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97, 1.05]
    before_user_code = 0
    for index, fraction in enumerate(fractions):
        marker = tmp_path / f"ran-{index}"
        msg_id = kernel.client.execute(slow_build_cell(2 + index, marker))
        time.sleep(build * fraction)  # the instant of the interrupt is what this test varies
        marked = kernel_log.read_text(errors="replace").count(INTERRUPT_MARKED)
        kernel.manager.interrupt_kernel()
        # The interrupt goes on the control socket, the next cell on the shell socket,
        # and nothing orders two sockets: past the end of the build the cell may have
        # replied already, and a next cell sent at once could be the one the kernel
        # finds running when the interrupt comes in (rightly stopping that one). So
        # the next cell waits until the kernel has taken the interrupt.
        wait_for_log_count(kernel_log, INTERRUPT_MARKED, marked + 1)
        reply = reply_to(kernel, msg_id)
        where = f"interrupt at {fraction:.0%} of the build: {reply}"
        if not marker.exists():
            # The cell's code never started: nothing may be lost.
            before_user_code += 1
            assert reply["status"] == "error" and reply["ename"] == "Interrupted", where
            assert "no variables were lost" in reply["evalue"], where
            assert kernel.execute("keep").result_text() == "7", where
        elif reply["status"] == "error":
            # It landed once the code ran: the runtime was stopped, and the
            # error names what went with it.
            assert reply["ename"] == "Interrupted" and "keep" in reply["evalue"], where
            kernel.execute("let keep = 7;")
        else:
            assert kernel.execute("keep").result_text() == "7", where
    print(f"{before_user_code} of {len(fractions)} interrupts landed before user code")
    assert before_user_code >= len(fractions) // 2


def test_an_interrupt_that_arrives_as_a_cell_ends_never_reaches_the_next_cell(tmp_path):
    # A test hook makes the kernel wait a second between marking the current
    # cell interrupted and stopping it; the next cell is sent inside that
    # window every time. The interrupt found a finished cell, so it must stop
    # nothing: the next cell builds, runs and keeps every variable. (CI once
    # lost a cell this way: an interrupt sent as a cell ended stopped the
    # build of the cell the client sent after reading the reply.)
    log = tmp_path / "kernel.log"
    late = Kernel(env={"FERROLAB_LOG_FILE": str(log), "FERROLAB_LOG": "info",
                       "FERROLAB_TEST_INTERRUPT_DELAY_MS": "1000"})
    try:
        late.execute("let keep = 7;")
        for attempt in range(3):
            assert late.execute(f"{attempt} + 1").result_text() == str(attempt + 1)
            late.manager.interrupt_kernel()
            wait_for_log_count(log, INTERRUPT_MARKED, attempt + 1)
            marker = tmp_path / f"ran-{attempt}"
            outcome = late.execute(slow_build_cell(100 + attempt, marker))
            assert outcome.status == "ok", outcome.error()
            assert marker.exists()
            assert late.execute("keep").result_text() == "7"
    finally:
        late.shutdown()


def session_crate_objects(kernel):
    """Object files rustc has written for the session crate (evcxr's `ctx`)."""
    pid = kernel.manager.provisioner.process.pid
    root = os.path.join(tempfile.gettempdir(), f"ferrolab-{os.getuid()}")
    pattern = os.path.join(root, f"{pid}-*", "evcxr", "target", "*", "debug", "deps", "ctx*.o")
    return glob.glob(pattern)


def test_cells_link_after_a_build_killed_while_writing_objects(kernel, tmp_path):
    # rustc killed while it writes object files used to leave them hard-linked
    # into its incremental cache, and later cells failed to link ("undefined
    # hidden symbol"). Interrupt just as the objects appear, several times.
    for attempt in range(3):
        code = slow_build_cell(100 + attempt, tmp_path / f"never-{attempt}")
        msg_id = kernel.client.execute(code)
        deadline = time.monotonic() + TIMEOUT
        while not session_crate_objects(kernel) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert session_crate_objects(kernel), "rustc never wrote an object file"
        kernel.manager.interrupt_kernel()
        reply = reply_to(kernel, msg_id)
        assert reply["ename"] == "Interrupted", reply
        assert not session_crate_objects(kernel), "the killed build's objects were left behind"
        # The same cell again, then a different one: both build, link and run.
        again = kernel.execute(code)
        assert again.status == "ok", (attempt, again.content)
        printed = kernel.execute('println!("linked {}", 1);')
        assert printed.status == "ok" and printed.stream_text() == "linked 1\n", printed.content


def test_a_broken_toolchain_is_named_with_the_command_that_fixes_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # No cargo at all: a PATH without it, and no rustup home to find one in.
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(empty), "CARGO_HOME": str(empty / "cargo"),
            "RUSTUP_HOME": str(empty / "rustup")}
    # rustup's cargo on PATH, but a HOME where rustup has no toolchain.
    no_default = {"HOME": str(empty), "RUSTUP_HOME": str(empty / "rustup")}
    for env, named, fix in [(bare, "`cargo` was not found", "sh.rustup.rs"),
                            (no_default, "`cargo` is on PATH but does not run",
                             "rustup default stable")]:
        running = Kernel(env=env)
        try:
            outcome = running.execute("1 + 1")
            error = outcome.error()
            assert outcome.status == "error" and error is not None, outcome.content
            text = error["evalue"] + "\n".join(error["traceback"])
            assert named in text and fix in text, text
            assert "os error 2" not in text, text
            # The kernel itself keeps serving: magics work.
            assert running.execute("%pwd").status == "ok"
        finally:
            running.shutdown()


def test_runtime_crash_names_lost_variables_and_recovers(kernel):
    kernel.execute("let lost_on_abort = 1u64;")
    outcome = kernel.execute("std::process::abort()")
    assert outcome.status == "error"
    error = outcome.error()
    assert error["ename"] == "RuntimeCrashed"
    assert "lost_on_abort" in error["evalue"]
    assert "SIGABRT" in error["evalue"]
    assert kernel.execute("10 + 1").result_text() == "11"


def test_shutdown_ends_the_kernel_process():
    running = Kernel()
    running.execute("1")
    process = running.manager.provisioner.process
    started = time.monotonic()
    msg_id = running.client.shutdown()
    reply = running.client.get_control_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["status"] == "ok" and reply["content"]["restart"] is False, reply["content"]
    status = process.wait(timeout=30)
    print(f"shutdown -> exit in {time.monotonic() - started:.2f}s")
    assert status == 0, f"the kernel exited with status {status} after a shutdown_request"
    running.client.stop_channels()
    running.manager.cleanup_resources()


def test_cells_run_when_the_build_directory_shares_a_parent_with_the_toolchain(tmp_path):
    # rustc's relative rpath is one level off once evcxr moves the library; with
    # the session directory under $HOME (beside ~/.rustup) that used to break
    # every cell with "exit status: 99".
    home_tmp = os.path.join(os.path.expanduser("~"), ".cache", "ferrolab-test-tmp")
    os.makedirs(home_tmp, exist_ok=True)
    running = Kernel(env={"TMPDIR": home_tmp})
    try:
        assert running.execute("20 + 22").result_text() == "42"
    finally:
        running.shutdown()


def test_a_kernel_left_idle_warms_up_and_keeps_no_variable_of_its_own(tmp_path):
    """With no cell waiting once the engine is ready, the kernel makes
    rust-analyzer read the standard library then (a warm-up cell whose variable
    is moved at once), not in the user's first cell. The user sees no trace of it."""
    log = tmp_path / "kernel.log"
    idle = Kernel(env={"FERROLAB_LOG_FILE": str(log), "FERROLAB_LOG": "info"})
    try:
        wait_for_log_count(log, "warm-up in", 1, seconds=TIMEOUT)
        assert "warm-up failed" not in log.read_text(errors="replace")
        first = idle.execute("let a = 40 + 2; a")
        assert first.status == "ok" and first.result_text() == "42"
        listing = idle.execute(":vars")
        assert listing.status == "ok"
        shown = listing.result_text() or listing.stream_text()
        assert "a: i32" in shown and "__ferrolab" not in shown, shown
        whos = idle.execute("%whos")
        assert "__ferrolab" not in whos.stream_text(), whos.stream_text()
    finally:
        idle.shutdown()
