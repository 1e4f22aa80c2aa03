//! How magics take part in every cell without the router knowing them.
//!
//! The router calls each [`CellHooks`] of [`MagicState::hooks`](super::MagicState::hooks)
//! in this order: [`before_rust`](CellHooks::before_rust) for each Rust
//! segment (a hook may add code in front of it or stop the cell), then
//! [`after_rust`](CellHooks::after_rust) once it ran; when the cell's runtime
//! ended and took variables with it, [`after_loss`](CellHooks::after_loss)
//! (to add advice to the error); and [`after_cell`](CellHooks::after_cell)
//! once the whole cell is done. Hooks never see the sockets; what they print
//! goes to the cell's streams.

use crate::engine::Engine;
use crate::kernel::CellContext;
use crate::protocol::content::ErrorInfo;
use std::collections::BTreeMap;

/// The environment commands of this session see (the kernel's, with `%env`'s changes).
pub type Env = BTreeMap<String, String>;

/// The Rust code a segment will run: the user's, with lines hooks added in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustRun {
    pub code: String,
    /// Lines added before the user's first line (error locations shift back by this much).
    pub lines_added: usize,
}

impl RustRun {
    pub fn new(code: &str) -> Self {
        RustRun {
            code: code.to_owned(),
            lines_added: 0,
        }
    }
}

/// One magic family's part in running cells.
pub trait CellHooks {
    /// Before a Rust segment: the code to run, or the error that stops the cell.
    fn before_rust(
        &mut self,
        engine: &Engine,
        run: RustRun,
        cell: &CellContext,
        env: &Env,
    ) -> Result<RustRun, ErrorInfo>;

    /// After a Rust segment ran; `user_code` is the segment as the user wrote it.
    fn after_rust(&mut self, user_code: &str, run: &RustRun, succeeded: bool);

    /// The cell's runtime ended and lost these `(name, type)` variables.
    fn after_loss(&self, lost: &[(String, String)], error: &mut ErrorInfo, env: &Env);

    /// After the whole cell, whether it succeeded or not.
    fn after_cell(&mut self, engine: &Engine, cell: &CellContext, succeeded: bool, env: &Env);
}
