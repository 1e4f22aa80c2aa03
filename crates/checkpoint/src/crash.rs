//! Test-only crash points: with `FERROLAB_CHECKPOINT_CRASH_AT=<step>` in the
//! environment, the process aborts when a save reaches that step, the way a
//! power cut or an OOM kill would stop it.

/// Aborts the process if the crash hook names `step`.
pub fn point(step: &str) {
    if std::env::var("FERROLAB_CHECKPOINT_CRASH_AT").is_ok_and(|wanted| wanted == step) {
        eprintln!("ferrolab-checkpoint: crash hook at step `{step}`");
        std::process::abort();
    }
}
