//! Shell commands: `!cmd`, `!!cmd`, `%%bash`, `%%sh`.
//!
//! A command runs in its own process group with its output streamed as it is
//! produced (stdout and stderr on their own streams, `\r` kept). `{expr}` in a
//! `!` line is replaced by the value of a Rust expression evaluated in the
//! session; `{{`/`}}` are literal braces; `$VAR` is the shell's. A command that
//! reads stdin gets an `input_request` when the frontend allows input, else
//! end-of-file at once. An interrupt sends SIGINT to the group, then SIGTERM,
//! then SIGKILL, two seconds apart, so nothing is left running.
//!
//! `!` never fails the cell (a non-zero exit prints one line on stderr, as in
//! IPython); `%%bash`/`%%sh` do.

use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::engine::text::Utf8Stream;
use crate::kernel::{CellContext, ExecuteOutcome, StreamName};
use crate::os::process_tree::{group_alive, signal_group};
use crate::os::stdin_watch;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn magics() -> Vec<Magic> {
    vec![
        Magic {
            name: "bash",
            kind: Kind::Cell,
            summary: "run the cell with bash; a non-zero exit fails the cell",
            help: "%%bash\n\nThe cell body is a bash script (fed on stdin). Output streams as it is\nproduced. A non-zero exit status makes the cell fail, so `Run All`\nstops there (unlike `!cmd`).\n\nExample:\n    %%bash\n    nvidia-smi -L\n    du -sh data/",
            run: bash,
        },
        Magic {
            name: "sh",
            kind: Kind::Cell,
            summary: "run the cell with sh; a non-zero exit fails the cell",
            help: "%%sh\n\nLike %%bash, with /bin/sh.",
            run: sh,
        },
    ]
}

/// The process group of the command running now, for interrupts.
#[derive(Clone, Default)]
pub struct ProcessSlot(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    pgid: Option<i32>,
    /// Set by an interrupt; the escalation ends when the group is gone.
    stopping: Option<crossbeam_channel::Receiver<()>>,
}

impl ProcessSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, pgid: i32) {
        *self.lock() = Slot {
            pgid: Some(pgid),
            stopping: None,
        };
    }

    /// After the command's main process ended: if it was interrupted, waits
    /// until nothing of its group is left (the escalation finishes).
    fn finish(&self) {
        let stopping = std::mem::take(&mut *self.lock()).stopping;
        if let Some(done) = stopping {
            let _ = done.recv_timeout(Duration::from_secs(8));
        }
    }

    /// SIGINT, then SIGTERM, then SIGKILL to the running command's group, two
    /// seconds apart, stopping as soon as the group is gone. Returns at once.
    pub fn interrupt(&self) {
        let mut slot = self.lock();
        let Some(pgid) = slot.pgid else { return };
        if slot.stopping.is_some() {
            return;
        }
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        slot.stopping = Some(done_rx);
        std::thread::spawn(move || {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
                if !signal_group(pgid as u32, signal) {
                    break; // the group is gone
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && group_alive(pgid as u32) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !group_alive(pgid as u32) {
                    break;
                }
            }
            let _ = done_tx.send(());
        });
    }
}

/// What feeds the command's stdin.
pub enum Input {
    /// Nothing: end of file at once.
    Nothing,
    /// The notebook, through input_request, when the program reads.
    Frontend,
    /// A script body.
    Bytes(Vec<u8>),
}

/// How a command ended.
pub struct Finished {
    pub status: ExitStatus,
    /// Stdout, when it was captured instead of shown.
    pub captured: String,
}

/// Runs `command`, streaming its output to the cell (or capturing stdout).
pub fn run(
    mut command: Command,
    cell: &CellContext,
    slot: &ProcessSlot,
    input: Input,
    capture: bool,
) -> std::io::Result<Finished> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(match input {
            Input::Nothing => Stdio::null(),
            _ => Stdio::piped(),
        });
    // Own process group; dies with the kernel, and the reaper ends the group.
    crate::os::process_tree::reaper::enroll(&mut command);
    let mut child = command.spawn()?;
    let pid = child.id() as i32;
    slot.start(pid);
    let stdin = child.stdin.take();
    let stdin_thread = match (input, stdin) {
        (Input::Bytes(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })),
        (Input::Frontend, Some(pipe)) => {
            let cell = cell.clone();
            Some(std::thread::spawn(move || {
                feed_from_frontend(pipe, pid, &cell)
            }))
        }
        _ => None,
    };
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Option<String>>();
    let mut readers = 0;
    if let Some(stdout) = child.stdout.take() {
        readers += 1;
        spawn_reader(
            stdout,
            cell.clone(),
            StreamName::Stdout,
            capture,
            done_tx.clone(),
        );
    }
    if let Some(stderr) = child.stderr.take() {
        readers += 1;
        spawn_reader(
            stderr,
            cell.clone(),
            StreamName::Stderr,
            false,
            done_tx.clone(),
        );
    }
    drop(done_tx);
    let status = child.wait();
    slot.finish();
    // Output written before the exit is in the pipes; a background process
    // that keeps a pipe open must not hold the cell, so wait only briefly.
    let mut captured = String::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    for _ in 0..readers {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(remaining) {
            Ok(Some(text)) => captured.push_str(&text),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    if let Some(thread) = stdin_thread
        && thread.is_finished()
    {
        let _ = thread.join();
    }
    Ok(Finished {
        status: status?,
        captured,
    })
}

/// Captured stdout (`!!cmd`) kept at most; the rest is read and counted so the
/// command is never blocked, and a note says how much was left out.
const CAPTURE_LIMIT: usize = 16 * 1024 * 1024;

/// Streams (or captures) one pipe. Streaming waits while the kernel's output
/// budget is spent, so a command that writes faster than the client reads
/// blocks on its pipe instead of growing the kernel.
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    cell: CellContext,
    name: StreamName,
    capture: bool,
    done: crossbeam_channel::Sender<Option<String>>,
) {
    std::thread::spawn(move || {
        let mut decoder = Utf8Stream::default();
        let mut captured = Capture::default();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let text = decoder.decode(&buffer[..n]);
                    if capture {
                        captured.push(&text);
                    } else {
                        cell.stream(name, &text);
                    }
                }
            }
        }
        let rest = decoder.finish();
        if capture {
            captured.push(&rest);
            let _ = done.send(Some(captured.finish()));
        } else {
            cell.stream(name, &rest);
            let _ = done.send(None);
        }
    });
}

/// Captured text, bounded by [`CAPTURE_LIMIT`].
#[derive(Default)]
struct Capture {
    text: String,
    dropped: usize,
}

impl Capture {
    fn push(&mut self, text: &str) {
        let room = CAPTURE_LIMIT.saturating_sub(self.text.len());
        if text.len() <= room {
            self.text.push_str(text);
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&text[..cut]);
        self.dropped += text.len() - cut;
    }

    fn finish(mut self) -> String {
        if self.dropped > 0 {
            self.text.push_str(&format!(
                "\n[ferrolab: output truncated: {} bytes beyond the first {} MiB were not captured]\n",
                self.dropped,
                CAPTURE_LIMIT >> 20
            ));
        }
        self.text
    }
}

/// Answers reads of the command's stdin with lines from the notebook.
fn feed_from_frontend(mut pipe: std::process::ChildStdin, pid: i32, cell: &CellContext) {
    use std::os::fd::AsRawFd;
    let Some(inode) = pipe_inode(pipe.as_raw_fd()) else {
        return;
    };
    let mut waiting_ticks = 0;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if !group_alive(pid as u32) {
            return;
        }
        let waiting = stdin_watch::group_blocked_reading_pipe(pid as u32, inode);
        waiting_ticks = if waiting { waiting_ticks + 1 } else { 0 };
        if waiting_ticks < 2 {
            continue;
        }
        waiting_ticks = 0;
        match cell.input("", false) {
            Ok(line) => {
                if pipe.write_all(format!("{line}\n").as_bytes()).is_err() {
                    return;
                }
            }
            // No frontend input (or interrupted): end of file.
            Err(_) => return,
        }
    }
}

fn pipe_inode(fd: i32) -> Option<u64> {
    // SAFETY: fstat fills the zeroed struct for an open descriptor.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some(stat.st_ino)
}

/// `$SHELL -c`, or `/bin/sh` when SHELL is unset.
fn shell_command(line: &str, call: &Call) -> Command {
    let shell = call
        .state
        .env_var("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_owned());
    let mut command = Command::new(shell);
    command.arg("-c").arg(line);
    call.state.apply_env(&mut command);
    command
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal} ({})", signal_name(signal)),
        _ => "ended".to_owned(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        _ => "signal",
    }
}

/// `!cmd` and `!!cmd`.
pub fn line(call: &mut Call, command_text: &str, capture: bool) -> MagicResult {
    let command_text = interpolate(call, command_text)?;
    if command_text.trim().is_empty() {
        return Err(ErrorInfo::usage("`!` needs a command, e.g. `!ls -la`"));
    }
    let first_word = command_text.split_whitespace().next().unwrap_or_default();
    if first_word == "cd" {
        call.cell.stream(
            StreamName::Stderr,
            "note: `!cd` runs in a shell that exits at once, so the directory does not change; use `%cd DIR`.\n",
        );
    }
    let input = if call.cell.allows_input() {
        Input::Frontend
    } else {
        Input::Nothing
    };
    let finished = run(
        shell_command(&command_text, call),
        call.cell,
        &call.state.running,
        input,
        capture,
    )
    .map_err(|error| ErrorInfo::new("OSError", format!("cannot run `{command_text}`: {error}")))?;
    if !finished.status.success() {
        call.cell.stream(
            StreamName::Stderr,
            &format!("[`{command_text}`: {}]\n", describe(finished.status)),
        );
        if first_word == "kaggle" && finished.status.code() == Some(127) {
            let rest = command_text.trim_start()["kaggle".len()..].trim();
            call.cell.stream(
                StreamName::Stderr,
                &format!(
                    "note: there is no `kaggle` command here, and none is needed: ferrolab has it built in — `%kaggle {rest}`\n"
                ),
            );
        }
    }
    if capture {
        let lines: Vec<&str> = finished.captured.lines().collect();
        return Ok(text_result(format!("{lines:#?}")));
    }
    Ok(None)
}

fn script(call: &mut Call, program: &str) -> MagicResult {
    let mut command = Command::new(program);
    command.args(super::args::words(program, call.args)?);
    call.state.apply_env(&mut command);
    let body = call.body.as_bytes().to_vec();
    let finished = run(
        command,
        call.cell,
        &call.state.running,
        Input::Bytes(body),
        false,
    )
    .map_err(|error| {
        ErrorInfo::new(
            "OSError",
            format!("Couldn't run program `{program}`: {error}"),
        )
    })?;
    if finished.status.success() {
        Ok(None)
    } else {
        Err(ErrorInfo::new(
            "CalledProcessError",
            format!(
                "Command '{program}' returned non-zero status: {}.",
                describe(finished.status)
            ),
        ))
    }
}

fn bash(call: &mut Call) -> MagicResult {
    script(call, "bash")
}

fn sh(call: &mut Call) -> MagicResult {
    script(call, "sh")
}

/// One piece of a `!` line.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `{expr}`: the value goes in as it is (the shell parses it).
    Expr(String),
    /// `{expr!q}`: the value goes in quoted as one shell word.
    Quoted(String),
}

/// Splits `echo {a + 1} {{x}} {name!q}` into text and expressions; `None`
/// when the braces do not balance (the line is then used as written).
fn pieces(line: &str) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut depth = 1;
                let mut expr = String::new();
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    expr.push(c);
                }
                if depth != 0 {
                    return None;
                }
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(match expr.trim_end().strip_suffix("!q") {
                    Some(quoted) if !quoted.trim().is_empty() => Piece::Quoted(quoted.to_owned()),
                    _ => Piece::Expr(expr),
                });
            }
            '}' => return None,
            c => text.push(c),
        }
    }
    pieces.push(Piece::Text(text));
    Some(pieces)
}

/// Replaces `{expr}` with the values of Rust expressions (one compile for all
/// of them). If they cannot be evaluated, the line runs as written, with a
/// note — as IPython does for `{}` that is not Python. As in IPython,
/// `{expr}` is pasted unquoted (so `{args}` can be several words, and a
/// value with `;` or `$(…)` is shell syntax); `{expr!q}` is quoted as one
/// shell word with `shlex` (POSIX shell rules).
fn interpolate(call: &mut Call, line: &str) -> Result<String, ErrorInfo> {
    let Some(pieces) = pieces(line) else {
        return Ok(line.to_owned());
    };
    let expressions: Vec<&str> = pieces
        .iter()
        .filter_map(|piece| match piece {
            Piece::Expr(expr) | Piece::Quoted(expr) => Some(expr.as_str()),
            Piece::Text(_) => None,
        })
        .collect();
    if expressions.is_empty() {
        return Ok(pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Text(text) | Piece::Expr(text) | Piece::Quoted(text) => text,
            })
            .collect());
    }
    let code = format!(
        "ferrolab::__hex(&[{}])",
        expressions
            .iter()
            // In parentheses, not a block: `format!` borrows its arguments,
            // so `{name}` leaves a String variable in place (a block moved it).
            .map(|expr| format!("format!(\"{{}}\", ({expr}))"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let values = match call.engine.execute(&code, 1, call.cell) {
        ExecuteOutcome::Ok {
            result: Some(bundle),
            ..
        } => bundle
            .get("text/plain")
            .and_then(|value| value.as_str())
            .and_then(decode_hex_list),
        _ => None,
    };
    let Some(values) = values.filter(|values| values.len() == expressions.len()) else {
        call.cell.stream(
            StreamName::Stderr,
            "note: `{…}` is not a Rust expression that can be formatted with {} here; the command runs as written (use {{ }} for literal braces).\n",
        );
        return Ok(line.to_owned());
    };
    assemble(pieces, values)
}

/// The command from its pieces and the expressions' values, in order.
fn assemble(pieces: Vec<Piece>, values: Vec<String>) -> Result<String, ErrorInfo> {
    let mut values = values.into_iter();
    let mut command = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => command.push_str(&text),
            Piece::Expr(_) => command.push_str(&values.next().unwrap_or_default()),
            Piece::Quoted(expr) => {
                let value = values.next().unwrap_or_default();
                let quoted = shlex::try_quote(&value).map_err(|_| {
                    ErrorInfo::usage(format!(
                        "the value of `{{{expr}!q}}` has a NUL byte, which no shell word can hold"
                    ))
                })?;
                command.push_str(&quoted);
            }
        }
    }
    Ok(command)
}

/// Parses `"68690a,"` (the Debug form of the prelude's `__hex`) into strings.
fn decode_hex_list(debug: &str) -> Option<Vec<String>> {
    let inner = debug.strip_prefix('"')?.strip_suffix('"')?;
    inner
        .split(',')
        .map(|part| {
            let bytes: Option<Vec<u8>> = (0..part.len())
                .step_by(2)
                .map(|i| {
                    part.get(i..i + 2)
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                })
                .collect();
            bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_expressions_and_escapes() {
        assert_eq!(
            pieces("echo {a + 1} {{literal}} x").unwrap(),
            vec![
                Piece::Text("echo ".into()),
                Piece::Expr("a + 1".into()),
                Piece::Text(" {literal} x".into()),
            ]
        );
        assert_eq!(
            pieces("echo {vec![1].iter().map(|x| { x + 1 }).sum::<i32>()}").unwrap()[1],
            Piece::Expr("vec![1].iter().map(|x| { x + 1 }).sum::<i32>()".into())
        );
        assert_eq!(
            pieces("no braces $HOME").unwrap(),
            vec![Piece::Text("no braces $HOME".into())]
        );
        assert_eq!(
            pieces("ls {dir!q} {x != q} {!q}").unwrap(),
            vec![
                Piece::Text("ls ".into()),
                Piece::Quoted("dir".into()),
                Piece::Text(" ".into()),
                Piece::Expr("x != q".into()),
                Piece::Text(" ".into()),
                Piece::Expr("!q".into()),
                Piece::Text(String::new()),
            ]
        );
        assert!(pieces("awk '{print $1'").is_none());
        assert!(pieces("echo }").is_none());
    }

    #[test]
    fn quoted_values_stay_one_shell_word() {
        let nasty = r#"it's a "test"; echo pwned $(id) `id` \ $HOME"#;
        let command = assemble(
            pieces("printf '%s\\n' {v!q} {w}").unwrap(),
            vec![nasty.to_owned(), "two words".to_owned()],
        )
        .unwrap();
        assert_eq!(
            shlex::split(&command).unwrap(),
            vec!["printf", "%s\\n", nasty, "two", "words"]
        );
        // Run by a real shell: one argument, nothing executed.
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{nasty}\ntwo\nwords\n")
        );
        assert!(
            assemble(pieces("echo {v!q}").unwrap(), vec!["a\0b".to_owned()]).is_err(),
            "a NUL cannot be quoted"
        );
    }

    #[test]
    fn decodes_hex_lists() {
        assert_eq!(
            decode_hex_list("\"6869,\"").unwrap(),
            vec!["hi".to_owned(), String::new()]
        );
        assert_eq!(decode_hex_list("\"e29c93\"").unwrap(), vec!["✓".to_owned()]);
        assert!(decode_hex_list("\"zz\"").is_none());
        assert!(decode_hex_list("42").is_none());
    }

    #[test]
    fn capture_keeps_the_limit_and_notes_what_it_left_out() {
        let mut capture = Capture::default();
        let line = "é".repeat(999) + "x"; // 1999 bytes: cuts fall inside a char
        let pushes = CAPTURE_LIMIT / 1999 + 10;
        for _ in 0..pushes {
            capture.push(&line);
        }
        let text = capture.finish();
        let (kept, note) = text.split_at(text.find("\n[ferrolab").unwrap());
        assert!(kept.len() <= CAPTURE_LIMIT && kept.len() >= CAPTURE_LIMIT - 1);
        let dropped = pushes * 1999 - kept.len();
        assert!(
            note.contains(&format!("output truncated: {dropped} bytes")),
            "{note}"
        );
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit code 3");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGINT)),
            "killed by signal 2 (SIGINT)"
        );
    }
}
