//! Test-only crash points. Built with the `crash-points` feature (which
//! `./kernel test` turns on through ferrolab's `test-hooks`), a save aborts
//! the process when it reaches the step named by
//! `FERROLAB_CHECKPOINT_CRASH_AT`, the way a power cut or an OOM kill would
//! stop it. Without the feature (every user build, and the copy compiled into
//! notebook sessions) `point` is empty and the variable is never read.

/// Aborts the process if the crash hook names `step`.
#[cfg(feature = "crash-points")]
pub fn point(step: &str) {
    if std::env::var("FERROLAB_CHECKPOINT_CRASH_AT").is_ok_and(|wanted| wanted == step) {
        eprintln!("ferrolab-checkpoint: crash hook at step `{step}`");
        std::process::abort();
    }
}

/// Does nothing: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_step: &str) {}
