//! `ferrolab prebuild SPEC...`: compiles crates into the shared build cache
//! ahead of time (a course image, a VM start script), so a notebook's `:dep`
//! finds them.
//!
//! A cache entry is found only by the exact rustc command line, and that
//! depends on everything in the build (features are unified across the whole
//! dependency graph). So each build here is what a kernel does: a real evcxr
//! session with the kernel's settings (`:load_config`, the build cache as
//! cargo's wrapper) running the `:dep` lines as a notebook's first `:dep` cell,
//! with ferrolab's checkpoint runtime added the way the kernel adds it. Each
//! crate is built alone (a notebook that adds just it), then all of them
//! together (one that adds them all in one cell). Each build runs in a child
//! process with its own build directory, as a kernel does.
//!
//! With no crate named, the one build is ferrolab's runtime alone, the
//! build a kernel's warm-up runs ([`warmup`]): after it, a kernel's first
//! `:dep` compiles only what the user asked for. `--warm-up` is that
//! warm-up, as a kernel starts it: quiet, and leaving the work to another
//! process already doing it.

use ferrolab::magics::checkpoint::warmup::{self, Built};
use ferrolab::magics::checkpoint::{CheckpointState, piggyback, write_build_profile};
use ferrolab_buildcache::{Cache, Settings, session_tag};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// What to build.
pub struct Request {
    pub specs: Vec<String>,
    /// Only the combined build (not each crate alone).
    pub together_only: bool,
}

/// `name = "1"`, `name = { ... }` or a whole `:dep` line, as a `:dep` line.
pub fn dep_line(spec: &str) -> Result<String, String> {
    let spec = spec.trim();
    if spec.is_empty() || spec.contains(['\n', '\r']) {
        return Err(format!(
            "`{spec}` is not one dependency (one line, e.g. 'regex = \"1\"')"
        ));
    }
    let body = spec
        .strip_prefix(":dep")
        .map(str::trim_start)
        .unwrap_or(spec);
    if body.starts_with(':') || body.is_empty() {
        return Err(format!(
            "`{spec}` is not a dependency (e.g. 'regex = \"1\"')"
        ));
    }
    Ok(format!(":dep {body}"))
}

/// The parent: one child build per group, then a summary.
pub fn run(request: &Request) -> ExitCode {
    let settings = Settings::from_env();
    if !settings.enabled() {
        eprintln!(
            "ferrolab prebuild: the build cache is {}; nothing to fill",
            settings.describe()
        );
        return ExitCode::FAILURE;
    }
    if let Err(error) = Cache::open(&settings) {
        eprintln!("ferrolab prebuild: {error}");
        return ExitCode::FAILURE;
    }
    let mut lines = Vec::new();
    for spec in &request.specs {
        match dep_line(spec) {
            Ok(line) => lines.push(line),
            Err(error) => {
                eprintln!("ferrolab prebuild: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if lines.is_empty() {
        return runtime_alone(&settings);
    }
    let mut groups: Vec<Vec<String>> = Vec::new();
    if !request.together_only || lines.len() == 1 {
        groups.extend(lines.iter().map(|line| vec![line.clone()]));
    }
    if lines.len() > 1 {
        groups.push(lines.clone());
    }
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("ferrolab prebuild: cannot find the ferrolab binary");
        return ExitCode::FAILURE;
    };
    println!(
        "Filling the build cache at {} ({} build{})",
        settings.dir.display(),
        groups.len(),
        if groups.len() == 1 { "" } else { "s" }
    );
    let mut failed = 0;
    for group in &groups {
        let session = match tempfile::Builder::new()
            .prefix("ferrolab-prebuild-")
            .tempdir()
        {
            Ok(dir) => dir,
            Err(error) => {
                eprintln!("ferrolab prebuild: cannot create a build directory: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(error) = write_build_profile(session.path()) {
            eprintln!("ferrolab prebuild: cannot write the build profile: {error}");
            return ExitCode::FAILURE;
        }
        let evcxr_dir = session.path().join("evcxr");
        let status = Command::new(&exe)
            .arg("prebuild")
            .arg("--in-session")
            .args(group)
            .env("EVCXR_TMPDIR", &evcxr_dir)
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(_) => failed += 1,
            Err(error) => {
                eprintln!("ferrolab prebuild: cannot start a build: {error}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "ferrolab prebuild: {failed} of {} builds failed",
            groups.len()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// ferrolab's own crates (the checkpoint runtime), in this process.
fn runtime_alone(settings: &Settings) -> ExitCode {
    println!(
        "Filling the build cache at {} (ferrolab's own crates)",
        settings.dir.display()
    );
    ferrolab::engine::toolchain::ensure_cargo_on_path();
    let started = Instant::now();
    let label = "ferrolab's own crates (the checkpoint runtime)";
    match warmup::build(true) {
        Ok(Built::AlreadyReady | Built::Busy) => {
            println!("{label}: ready (already in the cache)");
            ExitCode::SUCCESS
        }
        Ok(Built::Now { hits, misses }) => {
            println!(
                "{label}: ready in {:.1} s ({hits} crate builds from the cache, {misses} compiled and stored)",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{label}: failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--warm-up`: what a kernel starts beside itself (at nice 19). Silent;
/// leaves the work to another process already doing it.
pub fn warm_up() -> ExitCode {
    ferrolab::engine::toolchain::ensure_cargo_on_path();
    match warmup::build(false) {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The child: one evcxr session that runs `lines` as a first `:dep` cell.
pub fn in_session(lines: &[String]) -> ExitCode {
    ferrolab::engine::toolchain::ensure_cargo_on_path();
    let started = Instant::now();
    let label = lines
        .iter()
        .map(|line| line.trim_start_matches(":dep ").trim())
        .collect::<Vec<&str>>()
        .join(" + ");
    let session = std::env::var("EVCXR_TMPDIR").unwrap_or_default();
    match build(lines) {
        Ok(()) => {
            let settings = Settings::from_env();
            let summary = Cache::open(&settings)
                .map(|cache| cache.stats(Some(&session_tag(&session))))
                .ok()
                .and_then(|stats| stats.session)
                .map(|s| {
                    format!(
                        "{} crate builds from the cache, {} compiled and stored",
                        s.hits, s.misses
                    )
                })
                .unwrap_or_default();
            println!(
                "{label}: ready in {:.1} s ({summary})",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{label}: failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn build(lines: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find ferrolab: {e}"))?;
    let (mut context, outputs) = evcxr::EvalContext::with_subprocess_command(Command::new(&exe))
        .map_err(|e| format!("evcxr could not start: {e}"))?;
    ferrolab::engine::evcxr_contract::hide_from_analysis(
        &mut context,
        &[ferrolab::magics::checkpoint::RUNTIME_CRATE.to_owned()],
    );
    // The session's own output (there is none to speak of) is drained.
    for channel in [outputs.stdout, outputs.stderr] {
        std::thread::spawn(move || for _ in channel {});
    }
    let mut context = evcxr::CommandContext::with_eval_context(context);
    for (key, value) in ferrolab_buildcache::cargo_env_for_this_binary() {
        context
            .execute(&format!(":build_env {key}={value}"))
            .map_err(|e| e.to_string())?;
    }
    if let Err(error) = context.execute(":load_config --quiet") {
        eprintln!("note: evcxr configuration failed to load: {error}");
    }
    let code = lines.join("\n");
    let code = piggyback(&code, &CheckpointState::default()).unwrap_or(code);
    context
        .execute(&code)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_become_dep_lines() {
        assert_eq!(dep_line("regex = \"1\"").unwrap(), ":dep regex = \"1\"");
        assert_eq!(dep_line(":dep  regex").unwrap(), ":dep regex");
        assert!(dep_line("regex\n:clear").is_err());
        assert!(dep_line(":dep :clear").is_err());
        assert!(dep_line("  ").is_err());
    }
}
