//! The cancel flags of the cells that run now: one per shell (the main shell
//! and each subshell), shared by the shells, the control channel and SIGINT.
//!
//! An interrupt is kernel-wide (JEP 91): it marks every shell's current cell
//! and asks the interpreter to stop, all under one lock. A shell takes that
//! lock to register its next cell, so an interrupt that arrives as a cell
//! ends acts on that cell alone (or on nothing), never on the cell a client
//! sends next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which shell a cell runs on: `None` is the main shell, `Some(id)` a subshell.
pub type ShellKey = Option<String>;

#[derive(Clone, Default)]
pub struct RunningCells(Arc<Mutex<HashMap<ShellKey, Arc<AtomicBool>>>>);

impl RunningCells {
    fn lock(&self) -> MutexGuard<'_, HashMap<ShellKey, Arc<AtomicBool>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh cancel flag for the cell `shell` starts now; it replaces the
    /// flag of that shell's previous cell.
    pub fn begin(&self, shell: &ShellKey) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.lock().insert(shell.clone(), flag.clone());
        flag
    }

    /// Forgets a deleted subshell.
    pub fn forget(&self, shell: &ShellKey) {
        self.lock().remove(shell);
    }

    /// Marks every shell's current cell interrupted, then runs `stop` (which
    /// asks the interpreter to stop) while still holding the lock.
    pub fn interrupt_all(&self, stop: impl FnOnce()) {
        let cells = self.lock();
        for flag in cells.values() {
            flag.store(true, Ordering::SeqCst);
        }
        stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_marks_the_current_cell_of_every_shell_and_not_the_next() {
        let cells = RunningCells::default();
        let main = cells.begin(&None);
        let child = cells.begin(&Some("sub".into()));
        let mut stopped = false;
        cells.interrupt_all(|| stopped = true);
        assert!(stopped);
        assert!(main.load(Ordering::SeqCst) && child.load(Ordering::SeqCst));
        let next = cells.begin(&None);
        assert!(!next.load(Ordering::SeqCst));
    }

    #[test]
    fn a_forgotten_subshell_is_not_marked() {
        let cells = RunningCells::default();
        let key = Some("gone".to_owned());
        let gone = cells.begin(&key);
        cells.forget(&key);
        cells.interrupt_all(|| {});
        assert!(!gone.load(Ordering::SeqCst));
    }
}
