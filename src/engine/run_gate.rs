//! The line between "the cell is still being prepared" and "user code runs",
//! drawn so that an interrupt always knows which side it landed on.
//!
//! evcxr builds a cell in several steps (rust-analyzer, up to five `cargo`
//! runs, renaming the library) and then tells the runtime to run it; nothing
//! in between can be paused. So every cell with Rust code starts with a call to
//! `ferrolab::__gate(PATH)` (inserted by [`guard`]), and the gate file at PATH
//! decides, atomically, who came first:
//!
//! - the runtime reaching the gate creates PATH (`O_CREAT|O_EXCL`, empty) and
//!   runs the user's code;
//! - an interrupt claims PATH first by hard-linking a file that says
//!   `interrupted` onto it ([`RunGate::stop`]); the gate then finds it taken
//!   and unwinds before any user statement, which evcxr treats as a caught
//!   panic: every earlier variable is kept.
//!
//! Invariants: exactly one side wins for each cell; an interrupt that wins
//! never kills the runtime, one that loses does (user code is running, or is
//! about to); cells with no Rust code have nothing to guard and are never
//! killed for an interrupt.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The Rust statement that opens the gate (defined in the prelude).
const GATE_CALL: &str = "crate::ferrolab::__gate";
/// Added after the gate call (same line) when the run's content blocks are to
/// be shown as they come (see `relay::live_blocks`).
const LIVE_DISPLAYS_CALL: &str = "crate::ferrolab::__live_displays();";
/// What an interrupt writes into the gate file it claims.
pub const STOPPED_MARK: &[u8] = b"interrupted";

/// Where the current cell stands with respect to interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No cell is being run.
    Idle,
    /// A cell is being prepared; its gate file is `path` (not yet created).
    Open { path: PathBuf },
    /// The cell has no Rust code: nothing of the user's can start.
    NothingToRun,
    /// The cell has Rust code but no gate (the prelude is unavailable): an
    /// interrupt must kill the runtime when the code starts.
    Unguarded,
    /// An interrupt claimed the gate: the cell's code will not run.
    Stopped,
    /// The runtime passed the gate (or an interrupt could not claim it): user
    /// code runs or is about to.
    Passed,
}

/// What an interrupt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No cell runs.
    Idle,
    /// The cell's code has not started and now never will: stop the build,
    /// keep the runtime.
    BeforeUserCode,
    /// User code runs, or will start at any moment: the runtime must go.
    UserCode,
}

/// One per engine; the worker opens and closes it around each cell.
pub struct RunGate {
    dir: PathBuf,
    state: Mutex<State>,
    sequence: AtomicU64,
}

impl RunGate {
    /// Gate files live in `dir` (the kernel's private session directory).
    pub fn new(dir: PathBuf) -> RunGate {
        RunGate {
            dir,
            state: Mutex::new(State::Idle),
            sequence: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new cell starts: returns its gate file's path (which does not exist).
    pub fn open(&self) -> PathBuf {
        let number = self.sequence.fetch_add(1, Ordering::SeqCst);
        let path = self
            .dir
            .join(format!("gate-{}-{number}", std::process::id()));
        remove_files(&path);
        *self.state() = State::Open { path: path.clone() };
        path
    }

    /// The cell turned out to have no Rust code, or no gate could be put in
    /// it (`has_code`). A cell an interrupt already stopped stays stopped.
    pub fn unguarded(&self, has_code: bool) {
        let mut state = self.state();
        if matches!(*state, State::Open { .. }) {
            *state = if has_code {
                State::Unguarded
            } else {
                State::NothingToRun
            };
        }
    }

    /// An interrupt arrived: decides, once and for all, which side it is on.
    pub fn stop(&self) -> Verdict {
        let mut state = self.state();
        match &*state {
            State::Idle => Verdict::Idle,
            State::Stopped | State::NothingToRun => Verdict::BeforeUserCode,
            State::Passed | State::Unguarded => {
                *state = State::Passed;
                Verdict::UserCode
            }
            State::Open { path } => match claim(path) {
                Ok(()) => {
                    *state = State::Stopped;
                    Verdict::BeforeUserCode
                }
                Err(error) => {
                    if error.kind() != ErrorKind::AlreadyExists {
                        log::warn!(
                            "cannot claim the gate {}: {error}; the runtime will be stopped",
                            path.display()
                        );
                    }
                    *state = State::Passed;
                    Verdict::UserCode
                }
            },
        }
    }

    /// True once an interrupt claimed this cell's gate.
    pub fn stopped(&self) -> bool {
        *self.state() == State::Stopped
    }

    /// True when an interrupt found user code running (or about to run), so
    /// the runtime must be killed when it reports that code started.
    pub fn kills_on_run(&self) -> bool {
        *self.state() == State::Passed
    }

    /// The cell is done: forget its gate.
    pub fn close(&self) {
        let previous = std::mem::replace(&mut *self.state(), State::Idle);
        if let State::Open { path } = previous {
            remove_files(&path);
        }
        // Stopped/Passed cells: their paths are gone from the state; remove
        // whatever this process left in the directory.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let prefix = format!("gate-{}-", std::process::id());
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Claims `path` for an interrupt: atomically creates it with the stopped mark
/// in it, or fails with `AlreadyExists` when the runtime got there first.
fn claim(path: &Path) -> std::io::Result<()> {
    let staged = path.with_extension("stop");
    std::fs::write(&staged, STOPPED_MARK)?;
    let linked = std::fs::hard_link(&staged, path);
    let _ = std::fs::remove_file(&staged);
    linked
}

fn remove_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("stop"));
}

/// Rust code with the gate call in front of the user's first statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub code: String,
    /// The 1-based line the gate call occupies; the user's lines from here
    /// on are one further down than in the cell.
    pub gate_line: usize,
}

/// Puts the gate call on a line of its own before the first line evcxr
/// compiles as Rust (evcxr reads `:commands`, `!` lines, blank lines, `//`
/// comments and inner attributes only before any Rust code). `None` when
/// there is no Rust code in `code`. With `live_displays`, the same line also
/// announces that the cell's content blocks are displays.
pub fn guard(code: &str, gate: &Path, live_displays: bool) -> Option<Guarded> {
    let mut offset = 0;
    for (index, line) in code.split_inclusive('\n').enumerate() {
        if is_rust_code(line) {
            let live = if live_displays {
                LIVE_DISPLAYS_CALL
            } else {
                ""
            };
            let call = format!("{GATE_CALL}({:?});{live}\n", gate.to_string_lossy());
            let mut guarded = String::with_capacity(code.len() + call.len());
            guarded.push_str(&code[..offset]);
            guarded.push_str(&call);
            guarded.push_str(&code[offset..]);
            return Some(Guarded {
                code: guarded,
                gate_line: index + 1,
            });
        }
        offset += line.len();
    }
    None
}

/// Whether evcxr would start compiling Rust at this line (its own rule, from
/// `CodeBlock::from_original_user_code`, plus inner attributes, which must
/// stay ahead of any statement).
fn is_rust_code(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.starts_with('!') || line.starts_with("//") || line.trim().is_empty() {
        return false;
    }
    if super::evcxr_contract::is_command_line(line) {
        return false;
    }
    !line.trim_start().starts_with("#!")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_goes_before_the_first_rust_line() {
        let gate = Path::new("/s/gate-1");
        let guarded = guard("let a = 1;\na + 1", gate, false).unwrap();
        assert_eq!(
            guarded.code,
            "crate::ferrolab::__gate(\"/s/gate-1\");\nlet a = 1;\na + 1"
        );
        assert_eq!(guarded.gate_line, 1);
        // Announcing live displays adds no line.
        let live = guard("let a = 1;\na + 1", gate, true).unwrap();
        assert_eq!(
            live.code,
            "crate::ferrolab::__gate(\"/s/gate-1\");crate::ferrolab::__live_displays();\nlet a = 1;\na + 1"
        );
        assert_eq!(live.gate_line, 1);
        // Commands, comments, shell lines and attributes stay in front.
        let cell =
            ":dep regex = \"1\"\n\n// note\n!ls\n#![allow(unused)]\nuse std::fmt;\nfn f() {}";
        let guarded = guard(cell, gate, false).unwrap();
        assert_eq!(guarded.gate_line, 6);
        assert!(guarded.code.contains(
            "#![allow(unused)]\ncrate::ferrolab::__gate(\"/s/gate-1\");\nuse std::fmt;\n"
        ));
    }

    #[test]
    fn the_prelude_defines_the_gate_and_knows_the_mark() {
        let items = crate::engine::prelude::ITEMS;
        assert!(items.contains("pub fn __gate(gate: &str)"));
        let mark = String::from_utf8_lossy(STOPPED_MARK);
        assert!(items.contains(&format!("mark == b\"{mark}\"")));
        assert!(GATE_CALL.starts_with("crate::ferrolab::"));
        assert!(items.contains("pub fn __live_displays()"));
        assert!(LIVE_DISPLAYS_CALL.starts_with("crate::ferrolab::__live_displays("));
    }

    #[test]
    fn cells_without_rust_code_get_no_gate() {
        let gate = Path::new("/s/gate-1");
        assert_eq!(guard(":vars\n:dep foo = \"1\"\n\n// x\n", gate, true), None);
        assert_eq!(guard("", gate, true), None);
    }

    #[test]
    fn exactly_one_side_wins_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let gate = RunGate::new(dir.path().to_owned());
        // The interrupt first: it wins, the runtime's gate finds the mark.
        let path = gate.open();
        assert_eq!(gate.stop(), Verdict::BeforeUserCode);
        assert!(gate.stopped() && !gate.kills_on_run());
        let taken = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), STOPPED_MARK);
        // A second interrupt changes nothing.
        assert_eq!(gate.stop(), Verdict::BeforeUserCode);
        gate.close();
        assert!(!path.exists());

        // The runtime first: the interrupt loses and must kill the runtime.
        let path = gate.open();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        assert_eq!(gate.stop(), Verdict::UserCode);
        assert!(gate.kills_on_run() && !gate.stopped());
        gate.close();
        assert_eq!(gate.stop(), Verdict::Idle);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn cells_without_a_gate() {
        let dir = tempfile::tempdir().unwrap();
        let gate = RunGate::new(dir.path().to_owned());
        gate.open();
        gate.unguarded(false);
        assert_eq!(gate.stop(), Verdict::BeforeUserCode);
        assert!(!gate.kills_on_run());
        gate.close();
        gate.open();
        gate.unguarded(true);
        assert_eq!(gate.stop(), Verdict::UserCode);
        assert!(gate.kills_on_run());
        gate.close();
        // Stopped first, then found to have no gate: still stopped.
        gate.open();
        assert_eq!(gate.stop(), Verdict::BeforeUserCode);
        gate.unguarded(true);
        assert!(gate.stopped());
    }
}
