//! `%checkpoint`'s part in every cell, through the router's [`CellHooks`]:
//! the runtime joins the user's first `:dep` cell, successful Rust code goes
//! into the journal (what a restore replays), in-cell checkpoints and due
//! auto-saves run after the cell, and an error that lost variables names the
//! newest checkpoint holding them.
//!
//! Invariant: an auto-save only happens at a cell boundary, after a cell that
//! succeeded and was not interrupted.

use super::{CheckpointState, Env, checkpoint_error, in_cell, journal, listing, runtime, save};
use crate::engine::Engine;
use crate::kernel::{CellContext, StreamName};
use crate::magics::hooks::{CellHooks, RustRun};
use crate::protocol::content::ErrorInfo;
use runtime::Readiness;
use std::collections::BTreeMap;

impl CellHooks for CheckpointState {
    fn before_rust(
        &mut self,
        engine: &Engine,
        run: RustRun,
        cell: &CellContext,
        env: &Env,
    ) -> Result<RustRun, ErrorInfo> {
        if crate::engine::evcxr_contract::clears_session(&run.code) {
            self.cleared();
        }
        self.runtime_riding_along = false;
        if let Some(extended) = runtime::piggyback(&run.code, self) {
            // The session compiles the runtime now; a warm-up would compete.
            super::warmup::stop();
            self.runtime_riding_along = true;
            let added = extended.lines().count() - run.code.lines().count();
            return Ok(RustRun {
                code: extended,
                lines_added: run.lines_added + added,
            });
        }
        let uses_macro = run.code.contains("checkpoint!") || run.code.contains("checkpoint_now!");
        if uses_macro && !self.runtime_loaded {
            match runtime::ensure(engine, self, cell)? {
                Readiness::Loaded => {}
                Readiness::WouldDrop(risky) => {
                    return Err(checkpoint_error(format!(
                        "ferrolab::checkpoint! needs the checkpoint runtime, which is {}",
                        Readiness::why_not(&risky)
                            .trim_start_matches("not saved: the checkpoint runtime is ")
                    )));
                }
            }
        }
        in_cell::prepare(engine, self, env);
        Ok(run)
    }

    fn after_rust(&mut self, user_code: &str, _run: &RustRun, succeeded: bool) {
        let riding_along = std::mem::take(&mut self.runtime_riding_along);
        if succeeded {
            if riding_along {
                self.runtime_loaded = true;
            }
            self.journal.push(journal::Entry {
                code: user_code.to_owned(),
                unix_time: save::now_unix(),
            });
        }
    }

    fn after_loss(&self, lost: &[(String, String)], error: &mut ErrorInfo, env: &Env) {
        let names: Vec<String> = lost.iter().map(|(name, _)| name.clone()).collect();
        error
            .traceback
            .push(listing::lost_state_hint(self, &names, env));
    }

    fn after_cell(&mut self, engine: &Engine, cell: &CellContext, succeeded: bool, env: &Env) {
        in_cell::after_cell(self, cell, env);
        auto_save_if_due(engine, self, cell, succeeded, env);
    }
}

/// Saves a checkpoint when `%checkpoint auto` is on and its interval has passed.
fn auto_save_if_due(
    engine: &Engine,
    state: &mut CheckpointState,
    cell: &CellContext,
    succeeded: bool,
    env: &Env,
) {
    let Some(auto) = state.auto.clone() else {
        return;
    };
    let due = state
        .last_commit_unix
        .is_none_or(|last| save::now_unix() - last >= auto.every.as_secs_f64());
    // Nothing to keep yet: no variables (the definitions are in the journal).
    if !succeeded || !due || cell.is_cancelled() || engine.variables().is_empty() {
        return;
    }
    let place = match state.place(None, env) {
        Ok(place) => place,
        Err(error) => {
            cell.stream(
                StreamName::Stderr,
                &format!("[auto] checkpoint failed: {}\n", error.evalue),
            );
            return;
        }
    };
    let request = save::Request {
        place,
        label: None,
        vars: None,
        exclude: Vec::new(),
        files: Vec::new(),
        metrics: BTreeMap::new(),
        origin: "auto",
    };
    match save::save(engine, state, cell, request) {
        Ok(saved) => cell.stream(
            StreamName::Stderr,
            &format!("[auto] {}\n", listing::saved_summary(&saved)),
        ),
        Err(error) => cell.stream(
            StreamName::Stderr,
            &format!("[auto] checkpoint failed: {}\n", error.evalue),
        ),
    }
}
