//! A shell session's guarantees, seen from what it sends: order, busy/idle
//! brackets, abort-on-error, stream batching, and subshells running beside a
//! blocked main shell.

use super::*;

fn execution_count(message: &Message) -> u64 {
    message.content["execution_count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no execution_count in {}", message.content))
}

#[test]
fn queued_executes_run_and_reply_in_arrival_order_with_rising_counts() {
    let kernel = Kernel::new();
    let requests: Vec<Message> = (1..=4)
        .map(|n| execute(&format!("out cell {n}\nresult {n}")))
        .collect();
    let shell = kernel.shell();
    for request in &requests {
        shell.send(request.clone()).unwrap();
    }
    let last = requests.last().unwrap();
    let log = kernel.wire.after_idle(last);

    let replies: Vec<&Sent> = log.iter().filter(|sent| sent.is_reply()).collect();
    let answered: Vec<&str> = replies.iter().filter_map(|sent| sent.parent_id()).collect();
    let asked: Vec<&str> = requests.iter().map(|r| r.header.msg_id.as_str()).collect();
    assert_eq!(answered, asked, "replies out of arrival order");
    for (n, (reply, request)) in replies.iter().zip(&requests).enumerate() {
        let n = n as u64 + 1;
        assert_eq!(reply.message.content["status"], "ok");
        assert_eq!(execution_count(&reply.message), n);
        let sent = for_request(&log, request);
        let input = sent
            .iter()
            .find(|s| s.msg_type() == "execute_input")
            .unwrap();
        assert_eq!(execution_count(&input.message), n);
        let result = sent
            .iter()
            .find(|s| s.msg_type() == "execute_result")
            .unwrap();
        assert_eq!(execution_count(&result.message), n);
        assert_eq!(result.message.content["data"]["text/plain"], n.to_string());
    }
    let codes: Vec<String> = requests
        .iter()
        .map(|r| r.content["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kernel.fake.ran(), codes, "cells ran out of arrival order");
}

#[test]
fn every_request_is_bracketed_by_busy_first_and_idle_after_its_reply() {
    let kernel = Kernel::new();
    let requests = vec![
        execute("out hello\nerr world\nresult 1"),
        request("is_complete_request", json!({"code": "1"})),
        request("complete_request", json!({"code": "pri", "cursor_pos": 3})),
        execute("fail"),
        request("comm_info_request", json!({})),
        request(
            "history_request",
            json!({"hist_access_type": "tail", "n": 10}),
        ),
    ];
    let shell = kernel.shell();
    for request in &requests {
        shell.send(request.clone()).unwrap();
    }
    let log = kernel.wire.after_idle(requests.last().unwrap());

    let mut previous_idle = None;
    for request in &requests {
        let what = request.msg_type();
        let sent = for_request(&log, request);
        assert!(
            sent.first().is_some_and(|s| s.is_status("busy")),
            "{what}: the first thing sent is not busy: {:#?}",
            summary(&log)
        );
        assert!(
            sent.last().is_some_and(|s| s.is_status("idle")),
            "{what}: the last thing sent is not idle"
        );
        let reply = sent.iter().position(|s| s.is_reply());
        assert_eq!(
            reply,
            Some(sent.len() - 2),
            "{what}: the reply is not the last thing before idle"
        );
        assert_eq!(sent.iter().filter(|s| s.msg_type() == "status").count(), 2);
        // The brackets of one shell's requests do not overlap.
        let id = request.header.msg_id.as_str();
        let busy = log
            .iter()
            .position(|s| s.is_status("busy") && s.parent_id() == Some(id));
        assert!(
            busy > previous_idle,
            "{what} went busy before the one before it went idle"
        );
        previous_idle = log
            .iter()
            .position(|s| s.is_status("idle") && s.parent_id() == Some(id));
    }
}

#[test]
fn a_failed_cell_aborts_the_executes_queued_behind_it_and_later_ones_run() {
    let kernel = Kernel::new();
    let first = execute("result 1");
    let failing = execute("fail on purpose");
    let queued_a = execute("out never a");
    let inspect = request("is_complete_request", json!({"code": "x"}));
    let queued_b = execute("out never b");
    let shell = kernel.shell();
    for request in [&first, &failing, &queued_a, &inspect, &queued_b] {
        shell.send(request.clone()).unwrap();
    }
    let log = kernel.wire.after_idle(&inspect);

    let error = kernel.wire.reply_to(&failing);
    assert_eq!(error.content["status"], "error");
    assert_eq!(error.content["ename"], "Failed");
    assert_eq!(execution_count(&error), 2);
    for queued in [&queued_a, &queued_b] {
        let reply = kernel.wire.reply_to(queued);
        assert_eq!(reply.content["status"], "aborted");
        assert_eq!(reply.metadata["status"], "aborted");
        assert_eq!(
            execution_count(&reply),
            2,
            "an aborted request counts nothing"
        );
        let sent = for_request(&log, queued);
        let kinds: Vec<&str> = sent.iter().map(|s| s.msg_type()).collect();
        assert_eq!(kinds, ["status", "execute_reply", "status"], "{kinds:?}");
    }
    // The queued non-execute request keeps its place and is answered normally.
    assert_eq!(kernel.wire.reply_to(&inspect).content["status"], "complete");
    assert_eq!(kernel.fake.ran(), ["result 1", "fail on purpose"]);

    // Sent after the failure's reply was seen: runs as usual.
    let later = execute("result later");
    shell.send(later.clone()).unwrap();
    let reply = kernel.wire.reply_to(&later);
    assert_eq!(reply.content["status"], "ok");
    assert_eq!(execution_count(&reply), 3);
    assert_eq!(
        kernel.fake.ran(),
        ["result 1", "fail on purpose", "result later"]
    );
}

#[test]
fn a_failed_cell_without_stop_on_error_aborts_nothing() {
    let kernel = Kernel::new();
    let mut failing = execute("fail");
    failing.content["stop_on_error"] = false.into();
    let queued = execute("result 2");
    let shell = kernel.shell();
    shell.send(failing.clone()).unwrap();
    shell.send(queued.clone()).unwrap();
    assert_eq!(kernel.wire.reply_to(&failing).content["status"], "error");
    assert_eq!(kernel.wire.reply_to(&queued).content["status"], "ok");
    assert_eq!(kernel.fake.ran(), ["fail", "result 2"]);
}

#[test]
fn small_stream_writes_arrive_batched_in_order_with_the_text_intact() {
    let kernel = Kernel::new();
    let lines = 200;
    let mut code: Vec<String> = (0..lines).map(|n| format!("out line {n}")).collect();
    code.push("err oops".into());
    code.push("out tail".into());
    let cell = execute(&code.join("\n"));
    let shell = kernel.shell();
    shell.send(cell.clone()).unwrap();
    let log = kernel.wire.after_idle(&cell);

    let sent = for_request(&log, &cell);
    let streams: Vec<&Sent> = sent
        .iter()
        .copied()
        .filter(|s| s.msg_type() == "stream")
        .collect();
    let mut runs: Vec<(String, String)> = Vec::new();
    for stream in &streams {
        let name = stream.message.content["name"].as_str().unwrap().to_owned();
        let text = stream.message.content["text"].as_str().unwrap();
        match runs.last_mut() {
            Some((last, joined)) if *last == name => joined.push_str(text),
            _ => runs.push((name, text.to_owned())),
        }
    }
    let stdout: String = (0..lines).map(|n| format!("line {n}\n")).collect();
    assert_eq!(
        runs,
        [
            ("stdout".to_owned(), stdout),
            ("stderr".to_owned(), "oops\n".to_owned()),
            ("stdout".to_owned(), "tail\n".to_owned()),
        ]
    );
    assert!(
        streams.len() < lines / 2,
        "{} stream messages for {} writes: not batched",
        streams.len(),
        lines + 2
    );
    // All of the cell's output goes out before its reply.
    let reply = sent.iter().position(|s| s.is_reply()).unwrap();
    let last_stream = sent.iter().rposition(|s| s.msg_type() == "stream").unwrap();
    assert!(last_stream < reply);
}

#[test]
fn a_subshell_runs_its_cell_while_the_main_shell_cell_is_blocked() {
    let kernel = Kernel::new();
    let (subshells, shell) = kernel.subshells();
    let child = kernel.create_subshell(&subshells);
    let blocked = execute("wait");
    shell.send(blocked.clone()).unwrap();
    let started = kernel.gate.started.recv_timeout(DEADLINE);
    assert_eq!(started.as_deref(), Ok("wait"));

    let beside = on_subshell(execute("result from the subshell"), &child);
    shell.send(beside.clone()).unwrap();
    let reply = kernel.wire.reply_to(&beside);
    assert_eq!(reply.content["status"], "ok");
    assert_eq!(
        execution_count(&reply),
        1,
        "a subshell counts its own cells"
    );
    assert!(
        !kernel
            .wire
            .snapshot()
            .iter()
            .any(|s| s.is_reply() && s.parent_id() == Some(blocked.header.msg_id.as_str())),
        "the main shell's cell finished before it was released"
    );

    kernel.gate.release.send(()).unwrap();
    let reply = kernel.wire.reply_to(&blocked);
    assert_eq!(reply.content["status"], "ok");
    assert_eq!(execution_count(&reply), 1);
}

#[test]
fn an_interrupt_sent_once_a_cells_input_is_out_reaches_that_cell() {
    let kernel = Kernel::new();
    let running = kernel.running();
    // Interrupts the moment the cell's input goes out, as a client that
    // saw `execute_input` and pressed stop would.
    kernel.wire.on_iopub(move |message| {
        if message.msg_type() == "execute_input" {
            running.interrupt_all(|| {});
        }
    });
    let shell = kernel.shell();
    let cell = execute("wait\ncancelled");
    shell.send(cell.clone()).unwrap();
    let id = cell.header.msg_id.clone();
    kernel.wire.wait_for("the cell's execute_input", |log| {
        log.iter()
            .any(|sent| sent.msg_type() == "execute_input" && sent.parent_id() == Some(&id))
            .then_some(())
    });
    kernel.gate.release.send(()).unwrap();
    let log = kernel.wire.after_idle(&cell);
    let printed: String = for_request(&log, &cell)
        .iter()
        .filter(|sent| sent.msg_type() == "stream")
        .map(|sent| {
            sent.message.content["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(printed, "cancelled: true\n");
}
