//! The cell router: decides what each cell is and sends it to the right place.
//!
//! Implements the kernel's [`Interpreter`]. A whole-cell help query (`Vec?`)
//! becomes a pager payload from rust-analyzer's hover; everything else is Rust
//! for the evcxr [`Engine`] (evcxr's own `:commands` included).
//! Completeness checks are answered here without the engine.

mod completeness;
pub mod help;

use crate::engine::session_dir::SessionDir;
use crate::engine::text::{byte_offset, code_point_index};
use crate::engine::{Engine, toolchain};
use crate::kernel::{
    CellContext, Completeness, Completions, ExecuteOutcome, Interpreter, KernelIdentity, StreamName,
};
use crate::protocol::content::MimeBundle;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

pub struct Router {
    engine: Engine,
    rustc_version: Arc<OnceLock<String>>,
}

impl Router {
    /// A router whose engine keeps its files in `session` (removed at shutdown).
    pub fn new(session: Option<SessionDir>) -> Self {
        Router {
            engine: Engine::new(session),
            rustc_version: Arc::new(OnceLock::new()),
        }
    }

    fn help(&self, query: &help::HelpQuery, cell: &CellContext) -> ExecuteOutcome {
        match self.hover_for(&query.target) {
            Some(data) => ExecuteOutcome::Ok {
                result: None,
                payload: vec![json!({"source": "page", "data": data, "start": 0})],
            },
            None => {
                cell.stream(
                    StreamName::Stdout,
                    &format!("No documentation found for `{}`.\n", query.target),
                );
                ExecuteOutcome::ok()
            }
        }
    }

    fn hover_for(&self, target: &str) -> Option<MimeBundle> {
        let hover = self.engine.inspect(target, target.len())?;
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(hover.plain));
        data.insert("text/html".into(), Value::String(hover.html));
        Some(data)
    }
}

impl Interpreter for Router {
    fn start(&self) {
        self.engine.start();
        let version = self.rustc_version.clone();
        std::thread::spawn(move || {
            if let Some(found) = toolchain::rustc_version() {
                let _ = version.set(found);
            }
        });
    }

    fn identity(&self) -> KernelIdentity {
        let language_version = self
            .rustc_version
            .get()
            .cloned()
            .unwrap_or_else(|| env!("FERROLAB_BUILD_RUSTC").to_owned());
        KernelIdentity {
            banner: format!(
                "ferrolab {} — Rust in Jupyter (evcxr engine, rustc {language_version})\n\
                 Rust cells; evcxr commands start with `:` (:help). Help: `Vec?`.",
                env!("CARGO_PKG_VERSION")
            ),
            language_version,
        }
    }

    fn execute(&self, code: &str, cell: &CellContext) -> ExecuteOutcome {
        if let Some(query) = help::parse(code) {
            return self.help(&query, cell);
        }
        self.engine.execute(code, 1, cell)
    }

    fn complete(&self, code: &str, cursor: usize) -> Completions {
        let offset = byte_offset(code, cursor);
        let Some(set) = self.engine.complete(code, offset) else {
            return Completions {
                cursor_start: cursor,
                cursor_end: cursor,
                ..Completions::default()
            };
        };
        let cursor_start = code_point_index(code, set.start);
        let cursor_end = code_point_index(code, set.end);
        let types = set
            .items
            .iter()
            .map(|(text, kind)| json!({"text": text, "type": kind, "start": cursor_start, "end": cursor_end}))
            .collect();
        Completions {
            matches: set.items.into_iter().map(|(text, _)| text).collect(),
            cursor_start,
            cursor_end,
            types,
        }
    }

    fn inspect(&self, code: &str, cursor: usize, _detail_level: u8) -> Option<MimeBundle> {
        let offset = byte_offset(code, cursor);
        let hover = self.engine.inspect(code, offset)?;
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(hover.plain));
        data.insert("text/html".into(), Value::String(hover.html));
        Some(data)
    }

    fn is_complete(&self, code: &str) -> Completeness {
        completeness::check(code)
    }

    fn interrupt(&self) {
        self.engine.interrupt();
    }

    fn shutdown(&self) {
        self.engine.shutdown();
    }
}
