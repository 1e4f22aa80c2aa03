//! How a download reports how far it got: the caller's [`Progress`] (a live
//! bar in a notebook, a line on a terminal, or [`Silent`] for `--quiet`).
//!
//! Calls come from the thread that called [`download::fetch`](crate::download::fetch),
//! in order: `start`, any number of `update`s, then exactly one of `finish`
//! or `stop`. A download that starts over (the file changed on Kaggle) calls
//! `start` again for the new transfer.

pub trait Progress {
    /// A transfer of `name` begins with `done` of `total` bytes already on
    /// disk (more than 0 when it resumes).
    fn start(&mut self, name: &str, total: Option<u64>, done: u64);

    /// `done` bytes are on disk. Called after every chunk: an implementation
    /// that draws should throttle itself.
    fn update(&mut self, done: u64);

    /// The transfer is complete and checked: `done` bytes.
    fn finish(&mut self, done: u64);

    /// The transfer stopped at `done` bytes; `note` says why ("interrupted",
    /// "failed", "the file changed on Kaggle; starting over").
    fn stop(&mut self, done: u64, note: &str);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &str, _: Option<u64>, _: u64) {}
    fn update(&mut self, _: u64) {}
    fn finish(&mut self, _: u64) {}
    fn stop(&mut self, _: u64, _: &str) {}
}
