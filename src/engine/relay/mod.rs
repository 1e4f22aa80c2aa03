//! The child side of the engine: runs inside evcxr's runtime process.
//!
//! Before evcxr's runtime loop starts, [`enter_if_child`] puts pipes on fds 0,
//! 1 and 2 and starts one relay thread that stands between the runtime, the
//! user's code, the evcxr parent and the kernel:
//!
//! - fd 1 and fd 2 are parsed ([`parser`]): evcxr protocol lines go to the
//!   evcxr parent as before; user output goes to the kernel over the link as
//!   raw bytes (partial lines included); envelopes become display or panic
//!   notices;
//! - fd 0 is fed from evcxr's command pipe; while a cell runs, a thread blocked
//!   reading fd 0 makes the relay ask evcxr for input, so plain `stdin()` reads
//!   get the user's line instead of hanging;
//! - the kernel's orders (`chdir`, `set_env`, `ping`) run here, so `%cd` moves
//!   the Rust code's working directory without compiling anything.
//!
//! Invariants: output written before the runtime's `EVCXR_EXECUTION_COMPLETE`
//! reaches the kernel before `RunFinished`, which reaches the kernel before
//! evcxr sees the marker; a `Pong` follows all output read before the `Ping`.
//! If anything here fails to set up, the child runs as plain evcxr.

pub mod live_blocks;
pub mod parser;

use crate::engine::evcxr_contract;
use crate::engine::link_frame::{self, Notice, Order};
use crate::os::{fds, stdin_watch};
use live_blocks::{LiveBlocks, Outcome};
use parser::{Event, OutputParser};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Environment variable naming the kernel's link socket.
pub const LINK_ENV: &str = "FERROLAB_LINK";
/// Environment variable through which user-land code finds the flush pipes.
pub const FLUSH_FDS_ENV: &str = "FERROLAB_FLUSH_FDS";
const TICK: Duration = Duration::from_millis(50);
/// Request bytes for the user-land flusher, echoed back as acknowledgements.
const TICK_FLUSH: &[u8] = b"t";
const FINAL_FLUSH: &[u8] = b"f";

/// Environment variable naming a file for a trace of the relay's decisions
/// (for debugging ferrolab itself).
pub const TRACE_ENV: &str = "FERROLAB_RELAY_TRACE";

fn trace(what: std::fmt::Arguments) {
    use std::io::Write;
    static FILE: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os(TRACE_ENV)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(std::sync::Mutex::new(file))
    });
    if let Some(file) = file
        && let Ok(mut file) = file.lock()
    {
        let _ = writeln!(
            file,
            "[{} {:?}] {what}",
            std::process::id(),
            std::time::SystemTime::now()
        );
    }
}

/// Call first thing in `main`. In evcxr's runtime child started by ferrolab,
/// sets up the relay and returns (evcxr's `runtime_hook` then takes over).
pub fn enter_if_child() {
    if std::env::var_os(evcxr_contract::IS_RUNTIME_ENV).is_none() {
        return;
    }
    let Some(link) = std::env::var_os(LINK_ENV) else {
        return;
    };
    match Relay::install(std::path::Path::new(&link)) {
        Ok(relay) => {
            let spawned = std::thread::Builder::new()
                .name("ferrolab-relay".into())
                .spawn(move || relay.run());
            if let Err(error) = spawned {
                eprintln!("ferrolab: could not start the output relay: {error}");
            }
        }
        Err(error) => eprintln!("ferrolab: output relay unavailable, using plain evcxr: {error}"),
    }
}

struct Relay {
    link: Option<UnixStream>,
    commands: OwnedFd,
    to_runtime: OwnedFd,
    to_parent: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    flush_request: OwnedFd,
    flush_ack: OwnedFd,
    stdout_parser: OutputParser,
    stderr_parser: OutputParser,
    /// Content blocks of the current run that are shown as they come.
    blocks: LiveBlocks,
    in_run: bool,
    /// The command line being forwarded (evcxr may write it in pieces).
    command_line: Vec<u8>,
    input_pending: bool,
    /// Consecutive ticks that saw a thread blocked reading fd 0.
    stdin_wait_ticks: u8,
    /// When the current run started, and the process's CPU times then.
    run_started: Option<(Instant, CpuTimes)>,
    flusher_seen: bool,
    held_since: Option<Instant>,
    last_tick: Instant,
}

impl Relay {
    fn install(link_path: &std::path::Path) -> std::io::Result<Relay> {
        let mut link = UnixStream::connect(link_path)?;
        link_frame::write_json(
            &mut link,
            &Notice::Hello {
                pid: std::process::id(),
            },
        )?;

        // Keep evcxr's pipes on private descriptors.
        let commands = fds::duplicate(0)?;
        let to_parent = fds::duplicate(1)?;
        let (stdin_read, to_runtime) = fds::pipe()?;
        let (stdout, stdout_write) = fds::pipe()?;
        let (stderr, stderr_write) = fds::pipe()?;
        let (flush_request_read, flush_request) = fds::pipe()?;
        let (flush_ack, flush_ack_write) = fds::pipe()?;
        fds::set_nonblocking(&stdout)?;
        fds::set_nonblocking(&stderr)?;
        fds::set_nonblocking(&flush_ack)?;
        fds::set_nonblocking(&flush_request)?;

        let original_stderr = fds::duplicate(2)?;
        fds::replace_standard_fd(&stdin_read, 0)?;
        fds::replace_standard_fd(&stdout_write, 1)?;
        fds::replace_standard_fd(&stderr_write, 2)?;
        // The user-land flusher keeps these two ends for the life of the process.
        let flush_fds = format!("{},{}", leak(flush_request_read), leak(flush_ack_write));
        // SAFETY: called from `main` before any thread of this process starts.
        unsafe { std::env::set_var(FLUSH_FDS_ENV, flush_fds) };
        let _ = EXIT_DRAIN.set(ExitDrain {
            stderr: stderr.as_raw_fd(),
            original_stderr: leak(original_stderr),
        });
        // SAFETY: registering a plain extern "C" function with no arguments.
        unsafe { libc::atexit(drain_at_exit) };
        Ok(Relay {
            link: Some(link),
            commands,
            to_runtime,
            to_parent,
            stdout,
            stderr,
            flush_request,
            flush_ack,
            stdout_parser: OutputParser::new(true),
            blocks: LiveBlocks::default(),
            stderr_parser: OutputParser::new(false),
            in_run: false,
            command_line: Vec::new(),
            input_pending: false,
            stdin_wait_ticks: 0,
            run_started: None,
            flusher_seen: false,
            held_since: None,
            last_tick: Instant::now(),
        })
    }

    fn run(mut self) {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let timeout = if self.in_run || self.held_since.is_some() {
                TICK.as_millis() as i32
            } else {
                -1
            };
            let watched = [
                self.commands.as_raw_fd(),
                self.stdout.as_raw_fd(),
                self.stderr.as_raw_fd(),
                self.link.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                self.flush_ack.as_raw_fd(),
            ];
            let ready = match fds::poll_readable(&watched, timeout) {
                Ok(ready) => ready,
                Err(_) => return,
            };
            if ready[1] {
                self.drain_stdout(&mut buffer);
            }
            if ready[2] {
                self.drain_stderr(&mut buffer);
            }
            if ready[0] && !self.forward_commands(&mut buffer) {
                return;
            }
            if ready[3] && !self.serve_order(&mut buffer) {
                // The kernel is gone; keep serving evcxr so the runtime can end cleanly.
                self.link = None;
            }
            if ready[4] {
                self.consume_acks();
            }
            self.on_tick(&mut buffer);
        }
    }

    /// Commands from evcxr to the runtime, and input lines for user code.
    fn forward_commands(&mut self, buffer: &mut [u8]) -> bool {
        let n = match fds::read_some(&self.commands, buffer) {
            Ok(Some(0)) | Err(_) => return false, // evcxr closed our stdin: shut down
            Ok(Some(n)) => n,
            Ok(None) => return true,
        };
        let bytes = &buffer[..n];
        trace(format_args!(
            "command bytes (in_run={}): {:?}",
            self.in_run,
            String::from_utf8_lossy(bytes)
        ));
        if fds::write_all(&self.to_runtime, bytes).is_err() {
            return false;
        }
        if self.in_run {
            // An answer to an input request.
            self.input_pending = false;
            return true;
        }
        // A run starts once the whole `LOAD_AND_RUN` line reached the runtime.
        for &byte in bytes {
            if byte == b'\n' {
                if self.command_line.starts_with(evcxr_contract::LOAD_AND_RUN) {
                    self.in_run = true;
                    self.stdin_wait_ticks = 0;
                    self.run_started = Some((Instant::now(), CpuTimes::now()));
                    self.blocks.start_run();
                    self.notify(&Notice::RunStarted);
                }
                self.command_line.clear();
            } else {
                self.command_line.push(byte);
            }
        }
        true
    }

    fn drain_stdout(&mut self, buffer: &mut [u8]) {
        while let Ok(Some(n)) = fds::read_some(&self.stdout, buffer) {
            if n == 0 {
                break;
            }
            let mut events = Vec::new();
            self.stdout_parser.feed(&buffer[..n], &mut events);
            self.handle_events(events, false, buffer.len());
        }
        self.note_held();
    }

    fn drain_stderr(&mut self, buffer: &mut [u8]) {
        while let Ok(Some(n)) = fds::read_some(&self.stderr, buffer) {
            if n == 0 {
                break;
            }
            let mut events = Vec::new();
            self.stderr_parser.feed(&buffer[..n], &mut events);
            self.handle_events(events, true, buffer.len());
        }
        self.note_held();
    }

    fn handle_events(&mut self, events: Vec<Event>, from_stderr: bool, buffer_size: usize) {
        for event in events {
            match event {
                Event::User(bytes) => self.send_output(from_stderr, &bytes),
                Event::ParentLine(line) => {
                    for outcome in self.blocks.line(line) {
                        match outcome {
                            Outcome::Parent(line) => self.pass_to_parent(line, buffer_size),
                            Outcome::Display { mime, data } => self.display_block(mime, data),
                            Outcome::Text(text) => self.send_output(false, &text),
                        }
                    }
                }
                Event::Envelope { kind, payload } => self.handle_envelope(&kind, &payload),
            }
        }
    }

    fn pass_to_parent(&mut self, line: Vec<u8>, buffer_size: usize) {
        trace(format_args!(
            "parent line: {:?}",
            String::from_utf8_lossy(&line)
        ));
        if line == evcxr_contract::EXECUTION_COMPLETE {
            self.finish_run(buffer_size);
        } else if line == evcxr_contract::USER_ERROR_OCCURRED {
            self.notify(&Notice::UserError);
        } else if line.starts_with(evcxr_contract::INPUT_REQUEST) {
            self.input_pending = true;
        }
        let _ = fds::write_all(&self.to_parent, &line);
    }

    /// A content block the cell printed, shown now (see [`live_blocks`]).
    fn display_block(&mut self, mime: String, data: String) {
        let mut bundle = serde_json::Map::new();
        if mime != "text/plain" {
            bundle.insert(
                "text/plain".to_owned(),
                serde_json::Value::String(format!("<{mime} output>")),
            );
        }
        bundle.insert(mime, serde_json::Value::String(data));
        self.notify(&Notice::Display {
            data: bundle,
            metadata: serde_json::Map::new(),
            display_id: None,
            update: false,
        });
    }

    fn handle_envelope(&mut self, kind: &str, payload: &[u8]) {
        let notice = match kind {
            "display" | "update_display" => match serde_json::from_slice::<DisplayPayload>(payload)
            {
                Ok(display) => Notice::Display {
                    data: display.data,
                    metadata: display.metadata,
                    display_id: display.display_id,
                    update: kind == "update_display",
                },
                Err(error) => {
                    let text = format!("ferrolab: malformed display from the prelude: {error}\n");
                    self.send_output(true, text.as_bytes());
                    return;
                }
            },
            "live" => {
                self.blocks.set_live();
                return;
            }
            "value" => {
                self.blocks.value_follows();
                return;
            }
            "clear" => Notice::ClearOutput {
                wait: payload == b"wait",
            },
            "panic" => {
                let text = String::from_utf8_lossy(payload);
                let (thread, message) = text.split_once('\n').unwrap_or(("main", &text));
                Notice::Panic {
                    thread: thread.to_owned(),
                    message: message.to_owned(),
                }
            }
            _ => return,
        };
        self.notify(&notice);
    }

    /// The runtime printed its completion marker: everything the cell wrote
    /// must reach the kernel first, including text still in user-land buffers.
    fn finish_run(&mut self, buffer_size: usize) {
        let mut buffer = vec![0u8; buffer_size];
        if self.flusher_seen {
            self.request_flush_and_wait(&mut buffer);
        }
        self.drain_stderr(&mut buffer);
        let mut events = Vec::new();
        self.stdout_parser.release(&mut events);
        self.stderr_parser.release(&mut events);
        self.handle_events(events, false, buffer_size);
        self.held_since = None;
        self.in_run = false;
        self.input_pending = false;
        let (wall_ns, user_ns, system_ns) = match self.run_started.take() {
            Some((started, cpu)) => {
                let now = CpuTimes::now();
                (
                    started.elapsed().as_nanos() as u64,
                    now.user_ns.saturating_sub(cpu.user_ns),
                    now.system_ns.saturating_sub(cpu.system_ns),
                )
            }
            None => (0, 0, 0),
        };
        self.notify(&Notice::RunFinished {
            wall_ns,
            user_ns,
            system_ns,
        });
        trace(format_args!("run finished"));
    }

    fn request_flush_and_wait(&mut self, buffer: &mut [u8]) {
        self.consume_acks();
        if !fds::try_write(&self.flush_request, FINAL_FLUSH) {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            let watched = [self.flush_ack.as_raw_fd(), self.stdout.as_raw_fd()];
            let Ok(ready) = fds::poll_readable(&watched, 20) else {
                return;
            };
            if ready[1] {
                // Keep the pipe moving so the flusher never blocks writing.
                self.drain_stdout_after_flush(buffer);
            }
            if ready[0] && self.consume_acks() {
                break;
            }
        }
        self.drain_stdout_after_flush(buffer);
    }

    fn drain_stdout_after_flush(&mut self, buffer: &mut [u8]) {
        while let Ok(Some(n)) = fds::read_some(&self.stdout, buffer) {
            if n == 0 {
                break;
            }
            let mut events = Vec::new();
            self.stdout_parser.feed(&buffer[..n], &mut events);
            for event in events {
                match event {
                    Event::User(bytes) => self.send_output(false, &bytes),
                    Event::ParentLine(line) => {
                        let _ = fds::write_all(&self.to_parent, &line);
                    }
                    Event::Envelope { kind, payload } => self.handle_envelope(&kind, &payload),
                }
            }
        }
    }

    /// Reads flush acknowledgements (each echoes its request byte); true if
    /// the final flush's acknowledgement was among them.
    fn consume_acks(&mut self) -> bool {
        let mut scratch = [0u8; 64];
        let mut final_done = false;
        while let Ok(Some(n)) = fds::read_some(&self.flush_ack, &mut scratch) {
            if n == 0 {
                break;
            }
            self.flusher_seen = true;
            final_done |= scratch[..n].contains(&FINAL_FLUSH[0]);
        }
        final_done
    }

    fn serve_order(&mut self, buffer: &mut [u8]) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let order = match link_frame::read_order(link) {
            Ok(Some(order)) => order,
            _ => return false,
        };
        match order {
            Order::Ping { seq } => {
                self.drain_stdout(buffer);
                self.drain_stderr(buffer);
                self.notify(&Notice::Pong { seq });
            }
            Order::Chdir { id, path } => {
                let error = std::env::set_current_dir(&path)
                    .err()
                    .map(|error| error.to_string());
                self.notify(&Notice::OrderDone { id, error });
            }
            Order::SetEnv { id, key, value } => {
                let error = if key.is_empty() || key.contains('=') || key.contains('\0') {
                    Some(format!("invalid variable name {key:?}"))
                } else {
                    // SAFETY: evcxr's runtime reads no environment after start; user
                    // threads reading it concurrently is the documented risk of %env.
                    unsafe {
                        match &value {
                            Some(value) => std::env::set_var(&key, value),
                            None => std::env::remove_var(&key),
                        }
                    }
                    None
                };
                self.notify(&Notice::OrderDone { id, error });
            }
        }
        true
    }

    fn on_tick(&mut self, buffer: &mut [u8]) {
        if self.last_tick.elapsed() < TICK {
            return;
        }
        self.last_tick = Instant::now();
        if self.in_run {
            if self.flusher_seen {
                // Ask user-land to flush Rust's line-buffered stdout: `print!`
                // without a newline shows within one tick.
                fds::try_write(&self.flush_request, TICK_FLUSH);
            }
            let waiting = !self.input_pending
                && fds::pending_bytes(0) == 0
                && stdin_watch::thread_blocked_reading_stdin();
            self.stdin_wait_ticks = if waiting {
                self.stdin_wait_ticks.saturating_add(1)
            } else {
                0
            };
            // Two ticks in a row: a thread that merely passes through read(0)
            // is never mistaken for one waiting for the user.
            if self.stdin_wait_ticks >= 2 {
                // The runtime prints its marker before it reads fd 0 again, so
                // drain first: if the run just ended this is its idle read.
                self.drain_stdout(buffer);
                if self.in_run {
                    self.stdin_wait_ticks = 0;
                    trace(format_args!("stdin read detected: asking for input"));
                    self.input_pending = true;
                    let request = [evcxr_contract::INPUT_REQUEST, b":\n"].concat();
                    let _ = fds::write_all(&self.to_parent, &request);
                }
            }
        }
        if let Some(since) = self.held_since
            && since.elapsed() >= TICK
        {
            let mut events = Vec::new();
            self.stdout_parser.release(&mut events);
            self.handle_events(events, false, buffer.len());
            let mut events = Vec::new();
            self.stderr_parser.release(&mut events);
            self.handle_events(events, true, buffer.len());
            self.held_since = None;
        }
    }

    fn note_held(&mut self) {
        let holds = self.stdout_parser.holds_bytes() || self.stderr_parser.holds_bytes();
        match (holds, self.held_since) {
            (true, None) => self.held_since = Some(Instant::now()),
            (false, _) => self.held_since = None,
            _ => {}
        }
    }

    fn notify(&mut self, notice: &Notice) {
        if let Some(link) = self.link.as_mut()
            && link_frame::write_json(link, notice).is_err()
        {
            self.link = None;
        }
    }

    fn send_output(&mut self, from_stderr: bool, bytes: &[u8]) {
        if let Some(link) = self.link.as_mut()
            && link_frame::write_output(link, from_stderr, bytes).is_err()
        {
            self.link = None;
        }
    }
}

/// What `drain_at_exit` needs (raw descriptors that live as long as the process).
struct ExitDrain {
    stderr: i32,
    original_stderr: i32,
}

static EXIT_DRAIN: std::sync::OnceLock<ExitDrain> = std::sync::OnceLock::new();

/// When the runtime calls `exit` (evcxr's runtime does so when it cannot load
/// a cell's library), its last words are still in the stderr pipe and the
/// relay thread dies with the process. Hand them to evcxr's own stderr pipe,
/// which the kernel shows or logs.
extern "C" fn drain_at_exit() {
    let Some(drain) = EXIT_DRAIN.get() else {
        return;
    };
    let mut buffer = [0u8; 16 * 1024];
    loop {
        // SAFETY: non-blocking reads (the pipe was made non-blocking) into our buffer.
        let n = unsafe { libc::read(drain.stderr, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            return;
        }
        // SAFETY: writing bytes we just read to a descriptor we own.
        unsafe { libc::write(drain.original_stderr, buffer.as_ptr().cast(), n as usize) };
    }
}

/// CPU time used by this process so far.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    user_ns: u64,
    system_ns: u64,
}

impl CpuTimes {
    fn now() -> CpuTimes {
        // SAFETY: getrusage fills the zeroed struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
        CpuTimes {
            user_ns: ns(usage.ru_utime),
            system_ns: ns(usage.ru_stime),
        }
    }
}

/// Gives a descriptor away for the rest of the process's life.
fn leak(fd: OwnedFd) -> i32 {
    use std::os::fd::IntoRawFd;
    fd.into_raw_fd()
}

#[derive(serde::Deserialize)]
struct DisplayPayload {
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    display_id: Option<String>,
}
