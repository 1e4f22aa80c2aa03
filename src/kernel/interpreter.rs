//! The boundary between the protocol session and whatever runs cells.
//!
//! The kernel layer knows nothing about Rust or magics: it calls an
//! [`Interpreter`] with the code and a [`CellContext`](super::CellContext) and
//! turns the outcome into IOPub messages and a reply. Every method may block;
//! the kernel calls them from blocking threads, never from the async runtime.

use crate::kernel::CellContext;
use crate::protocol::content::{ErrorInfo, MimeBundle};
use serde_json::Value;

/// How a cell ended.
#[derive(Debug, Clone)]
pub enum ExecuteOutcome {
    /// Success, with an optional `execute_result` bundle and pager-style payloads.
    Ok {
        result: Option<MimeBundle>,
        payload: Vec<Value>,
    },
    /// Failure: the kernel publishes exactly one `error` output with this and
    /// replies `status: error`.
    Error(ErrorInfo),
}

impl From<ErrorInfo> for ExecuteOutcome {
    fn from(error: ErrorInfo) -> Self {
        ExecuteOutcome::Error(error)
    }
}

impl ExecuteOutcome {
    pub fn ok() -> Self {
        ExecuteOutcome::Ok {
            result: None,
            payload: Vec::new(),
        }
    }

    pub fn error(
        ename: impl Into<String>,
        evalue: impl Into<String>,
        traceback: Vec<String>,
    ) -> Self {
        ExecuteOutcome::Error(ErrorInfo {
            ename: ename.into(),
            evalue: evalue.into(),
            traceback,
        })
    }
}

/// Completion matches; cursor positions are in Unicode code points.
#[derive(Debug, Clone, Default)]
pub struct Completions {
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
    /// `_jupyter_types_experimental` entries, if the interpreter has kinds.
    pub types: Vec<Value>,
}

/// The answer to `is_complete_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    Incomplete { indent: String },
    Invalid,
    Unknown,
}

/// What `kernel_info_reply` says about the language and the kernel.
#[derive(Debug, Clone)]
pub struct KernelIdentity {
    pub language_version: String,
    pub banner: String,
    /// (text, url) pairs for the frontend's Help menu.
    pub help_links: Vec<(String, String)>,
}

/// Runs cells. Implemented by the cell router.
pub trait Interpreter: Send + Sync + 'static {
    /// Called once, right after the sockets are bound: start background warm-up.
    fn start(&self) {}

    fn identity(&self) -> KernelIdentity;

    fn execute(&self, code: &str, cell: &CellContext) -> ExecuteOutcome;

    /// `cursor` counts code points.
    fn complete(&self, code: &str, cursor: usize) -> Completions;

    /// Help for the symbol at `cursor` (code points), or `None` if nothing is found.
    fn inspect(&self, code: &str, cursor: usize, detail_level: u8) -> Option<MimeBundle>;

    fn is_complete(&self, code: &str) -> Completeness;

    /// The text the history stores for this cell's code. The kernel knows
    /// nothing about what a cell means, so the interpreter (which knows its
    /// magics) redacts secrets typed into it here; the default stores the
    /// code as it is.
    fn history_text(&self, code: &str) -> String {
        code.to_owned()
    }

    /// Stop the running cell as soon as possible. Called from the control task
    /// (interrupt_request) or the SIGINT handler; must not block for long.
    fn interrupt(&self);

    /// Release child processes and temporary files before the process exits.
    fn shutdown(&self);
}
