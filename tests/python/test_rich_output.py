"""Rich content that a cell prints (`EVCXR_BEGIN_CONTENT mime` … `EVCXR_END_CONTENT`,
as plotters' `evcxr_figure` and evcxr_image print it) is shown while the cell runs, each
block as its own display_data, in order with the text around it; the cell's value stays
the one execute_result; broken blocks come out as text with a note, never swallowed.

One kernel for the module: its first `:dep` (plotters) is the slow part, and the build
cache that `./kernel test` keeps between runs (FERROLAB_TEST_LASTING_BUILD_CACHE) makes it
fast after the first run.
"""

import os
import queue
import time

import pytest

from conftest import Kernel, TIMEOUT


@pytest.fixture(scope="module")
def kernel():
    env = {}
    lasting_cache = os.environ.get("FERROLAB_TEST_LASTING_BUILD_CACHE")
    if lasting_cache:
        env["FERROLAB_BUILD_CACHE_DIR"] = lasting_cache
    running = Kernel(env=env)
    yield running
    running.shutdown()


def block(mime, body):
    return f"EVCXR_BEGIN_CONTENT {mime}\\n{body}\\nEVCXR_END_CONTENT"


def kinds(outcome):
    return [kind for kind, _ in outcome.outputs]


def test_a_block_is_shown_while_the_cell_still_runs(kernel, tmp_path):
    """The cell prints a block, then waits for a file that the test creates only once
    the display_data has arrived: if displays waited for the end, it would never end."""
    flag = tmp_path / "seen"
    code = (
        f'println!("{block("text/html", "<b>step 0</b>")}");\n'
        f'while !std::path::Path::new({str(flag)!r}).exists() {{\n'
        "    std::thread::sleep(std::time::Duration::from_millis(20));\n"
        "}\n"
        'println!("done");'
    ).replace("'", '"')
    client = kernel.client
    msg_id = client.execute(code)
    deadline = time.monotonic() + TIMEOUT
    shown = None
    while shown is None:
        assert time.monotonic() < deadline, "no display_data while the cell ran"
        try:
            message = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "display_data":
            shown = message["content"]
    assert shown["data"]["text/html"] == "<b>step 0</b>"
    flag.write_text("")
    reply = client.get_shell_msg(timeout=TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = client.get_shell_msg(timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok"


def test_every_block_of_a_loop_arrives_in_order_with_the_text_around_it(kernel):
    code = (
        "for i in 0..3 {\n"
        '    println!("before {i}");\n'
        f'    println!("{block("text/html", "<b>step {i}</b>")}");\n'
        "}\n"
        'println!("after");'
    )
    outcome = kernel.execute(code)
    assert outcome.status == "ok", outcome.error()
    shown = []
    for kind, content in outcome.outputs:
        if kind == "stream":
            shown.append(content["text"])
        elif kind == "display_data":
            shown.append(content["data"]["text/html"])
    assert "".join(part if part.endswith("\n") else part + "\n" for part in shown) == (
        "before 0\n<b>step 0</b>\nbefore 1\n<b>step 1</b>\nbefore 2\n<b>step 2</b>\nafter\n"
    ), shown
    assert "execute_result" not in kinds(outcome)


def test_the_value_stays_the_execute_result(kernel):
    outcome = kernel.execute(f'println!("{block("text/markdown", "**shown**")}");\n40 + 2')
    assert outcome.status == "ok", outcome.error()
    assert kinds(outcome) == ["display_data", "execute_result"], outcome.outputs
    assert outcome.of_type("display_data")[0]["data"]["text/markdown"] == "**shown**"
    assert outcome.result_text() == "42"
    # A value whose own evcxr_display prints a block is still the value.
    kernel.execute(
        "struct Card;\n"
        f'impl Card {{ fn evcxr_display(&self) {{ println!("{block("text/html", "<i>card</i>")}"); }} }}'
    )
    card = kernel.execute(f'println!("{block("text/html", "<b>first</b>")}");\nCard')
    assert kinds(card) == ["display_data", "execute_result"], card.outputs
    assert card.of_type("execute_result")[0]["data"]["text/html"] == "<i>card</i>"


def test_split_large_threaded_blocks_all_arrive(kernel):
    code = (
        "use std::io::Write;\n"
        "let mut out = std::io::stdout();\n"
        'write!(out, "EVCXR_BEGIN_CONTENT text/html\\n<i>spl").unwrap(); out.flush().unwrap();\n'
        'write!(out, "it</i>\\nEVCXR_END").unwrap(); out.flush().unwrap();\n'
        'writeln!(out, "_CONTENT").unwrap();\n'
        'let big = "x".repeat(3_000_000);\n'
        'println!("EVCXR_BEGIN_CONTENT text/plain\\n{big}\\nEVCXR_END_CONTENT");\n'
        f'std::thread::spawn(|| println!("{block("text/html", "<u>thread</u>")}")).join().unwrap();'
    )
    outcome = kernel.execute(code)
    assert outcome.status == "ok", outcome.error()
    shown = [content["data"] for content in outcome.of_type("display_data")]
    assert [d.get("text/html") for d in shown] == ["<i>split</i>", None, "<u>thread</u>"]
    assert shown[1]["text/plain"] == "x" * 3_000_000
    assert not outcome.stream_text().strip(), outcome.stream_text()[:200]


def test_broken_blocks_are_text_with_a_note_and_the_next_cell_is_unharmed(kernel):
    no_mime = kernel.execute('println!("EVCXR_BEGIN_CONTENT\\n<b>x</b>\\nEVCXR_END_CONTENT");')
    assert no_mime.status == "ok"
    assert "<b>x</b>" in no_mime.stream_text() and "names no MIME type" in no_mime.stream_text()
    assert not no_mime.of_type("display_data")
    unterminated = kernel.execute('println!("EVCXR_BEGIN_CONTENT text/html\\n<b>half");')
    assert unterminated.status == "ok"
    assert "<b>half" in unterminated.stream_text()
    assert "no EVCXR_END_CONTENT" in unterminated.stream_text()
    after = kernel.execute('println!("plain");\n1 + 1')
    assert after.stream_text() == "plain\n" and after.result_text() == "2"


def test_plotters_figures_drawn_in_a_loop_each_arrive(kernel):
    dep = kernel.execute(
        ':dep plotters = { version = "0.3", default-features = false, features = ["evcxr", "line_series"] }',
        timeout=1800,
    )
    assert dep.status == "ok", dep.error()
    code = (
        "use plotters::prelude::*;\n"
        "for epoch in 1..=3 {\n"
        "    evcxr_figure((240, 120), |root| {\n"
        "        root.fill(&WHITE)?;\n"
        "        let mut chart = ChartBuilder::on(&root).build_cartesian_2d(0..4, 0..10)?;\n"
        "        chart.draw_series(LineSeries::new((0..=epoch).map(|x| (x, 9 - 2 * x)), &RED))?;\n"
        "        Ok(())\n"
        "    }).evcxr_display();\n"
        "}\n"
        "evcxr_figure((240, 120), |root| { root.fill(&BLUE)?; Ok(()) })"
    )
    outcome = kernel.execute(code)
    assert outcome.status == "ok", outcome.error()
    assert kinds(outcome) == ["display_data"] * 3 + ["execute_result"], outcome.outputs
    figures = [content["data"]["text/html"] for content in outcome.of_type("display_data")]
    assert all("<svg" in figure for figure in figures)
    # Each epoch's line has one more point than the last.
    assert len({figure for figure in figures}) == 3
    assert "<svg" in outcome.of_type("execute_result")[0]["data"]["text/html"]


def iopub_until(client, msg_id, done, seconds=TIMEOUT):
    """The cell's iopub messages (type, content) until `done(messages)` holds."""
    messages = []
    deadline = time.monotonic() + seconds
    while not done(messages):
        assert time.monotonic() < deadline, f"gave up waiting; saw {[m[0] for m in messages]}"
        try:
            message = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] != "status":
            messages.append((message["msg_type"], message["content"]))
    return messages


def test_live_plots_and_progress_bars_redraw_one_output_while_the_cell_runs(kernel, tmp_path):
    """`ferrolab::live` and `ferrolab::progress` show once and then update in place; the
    updates arrive while the cell runs (it waits for a file the test writes only after the
    last update came); another cell with the same id gets an output of its own."""
    flag = tmp_path / "updated"
    code = (
        "for epoch in 1..=3u64 {\n"
        '    ferrolab::live("curve", "image/svg+xml", &format!("<svg><text>{epoch}</text></svg>"));\n'
        '    ferrolab::progress("epochs", epoch, 3);\n'
        "}\n"
        f'while !std::path::Path::new("{flag}").exists() {{\n'
        "    std::thread::sleep(std::time::Duration::from_millis(20));\n"
        "}"
    )
    client = kernel.client
    msg_id = client.execute(code)
    updates = lambda ms: sum(1 for kind, _ in ms if kind == "update_display_data")
    seen = iopub_until(client, msg_id, lambda ms: updates(ms) == 4)
    flag.write_text("")
    reply = client.get_shell_msg(timeout=TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = client.get_shell_msg(timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok"
    shown = [(kind, c["transient"]["display_id"], c["data"]) for kind, c in seen
             if kind in ("display_data", "update_display_data")]
    assert [kind for kind, _, _ in shown] == ["display_data"] * 2 + ["update_display_data"] * 4
    curve_id, bar_id = shown[0][1], shown[1][1]
    assert curve_id != bar_id
    assert [data["image/svg+xml"] for _, i, data in shown if i == curve_id] == [
        f"<svg><text>{epoch}</text></svg>" for epoch in (1, 2, 3)]
    bars = [data for _, i, data in shown if i == bar_id]
    assert [bar["text/plain"].split("] ")[1] for bar in bars] == ["1/3 (33%)", "2/3 (67%)", "3/3 (100%)"]
    assert '<progress value="3" max="3"' in bars[-1]["text/html"]
    again = kernel.execute('ferrolab::live("curve", "text/plain", "next cell");')
    assert again.status == "ok"
    other = again.of_type("display_data")
    assert len(other) == 1 and other[0]["transient"]["display_id"] != curve_id
