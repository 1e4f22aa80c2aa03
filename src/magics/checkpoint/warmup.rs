//! The checkpoint runtime's warm-up: its crates compiled into the build
//! cache before a notebook's first `:dep` needs them.
//!
//! Every first `:dep` of a session also compiles the runtime (see
//! [`runtime`](super::runtime)); with an empty cache that is ≈ 4 s of CPU in
//! the user's build, and cargo starts the runtime's crates before the user's.
//! So once a kernel's engine is first idle (after the first result: started
//! any earlier, even at nice 19, it delayed that result by ≈ 1 s on two
//! cores), the kernel starts, at nice 19 in its own process group,
//! `ferrolab prebuild --warm-up`: one cargo build of a crate that depends on
//! the runtime alone, with the manifest, flags and variables of an evcxr
//! session ([`SessionCargo`]), so every rustc command line, and so every
//! cache key, is the one the session's first `:dep` will ask for. It takes
//! ≈ 3 s while the user reads or types; a `:dep` that comes first ends it
//! ([`stop`]): what it finished is in the cache, the rest the session
//! compiles itself, nothing twice at once.
//!
//! Invariants: a warm-up that finds the cache ready ([`Cache::is_ready`]
//! under a name that digests the runtime's sources, the compiler and
//! [`SessionCargo`]) compiles nothing; one builder per cache at a time (the
//! mark's lock); the mark is written only after a complete build; a
//! background warm-up that failed (no registry, a broken toolchain) leaves
//! its error beside the mark and is not tried again for an hour.
//! `FERROLAB_RUNTIME_WARMUP=0` turns the kernel's warm-up off; `ferrolab
//! prebuild` with no crate runs the same build in the foreground, always.

use super::runtime;
use crate::engine::evcxr_contract::{SessionCargo, session_manifest};
use ferrolab_buildcache::{Cache, Settings, session_tag};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// `0` turns the kernel's warm-up off.
pub const SWITCH_ENV: &str = "FERROLAB_RUNTIME_WARMUP";

/// What a build did.
#[derive(Debug, PartialEq, Eq)]
pub enum Built {
    /// The cache already had every crate.
    AlreadyReady,
    /// Another process is warming the same cache (`wait` was false).
    Busy,
    /// Built now: crates restored from the cache and crates compiled.
    Now { hits: u64, misses: u64 },
}

/// The cache the environment names, its mark name, the session's cargo.
struct Plan {
    cache: Cache,
    mark: String,
    cargo: SessionCargo,
    runtime_dir: PathBuf,
}

fn plan() -> Result<Plan, String> {
    let settings = Settings::from_env();
    if !settings.enabled() {
        return Err(format!("the build cache is {}", settings.describe()));
    }
    let cache = Cache::open(&settings).map_err(|e| e.to_string())?;
    let cargo = SessionCargo::of_this_machine().ok_or("rustc did not answer")?;
    let runtime_dir =
        runtime::write_crate().map_err(|e| format!("cannot write the runtime crate: {e}"))?;
    let mark = format!(
        "checkpoint-runtime-{}",
        &ferrolab_buildcache::digest::bytes(
            format!(
                "{}\n{}\n{}\n{}",
                runtime_dir.display(),
                cargo.compiler,
                cargo.describe(),
                session_manifest("")
            )
            .as_bytes()
        )[..16]
    );
    Ok(Plan {
        cache,
        mark,
        cargo,
        runtime_dir,
    })
}

/// Where the runtime stands in the build cache the environment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ready,
    /// A warm-up (or `ferrolab prebuild`) is compiling it now.
    Warming,
    /// Not there: the next first `:dep` compiles it.
    Missing,
    /// Not there, and the last warm-up failed (the reason is on record).
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Warming => "warming",
            Status::Missing => "missing",
            Status::Failed => "failed",
        }
    }
}

/// `None` when there is no usable cache (or no rustc); with
/// [`Status::Failed`], the last warm-up's error.
pub fn status() -> Option<(Status, Option<String>)> {
    let plan = plan().ok()?;
    Some(if plan.cache.is_ready(&plan.mark) {
        (Status::Ready, None)
    } else if plan.cache.ready_build_running(&plan.mark) {
        (Status::Warming, None)
    } else if let Ok(error) = std::fs::read_to_string(plan.failed_stamp()) {
        (Status::Failed, Some(error))
    } else {
        (Status::Missing, None)
    })
}

/// Compiles the runtime into the cache unless it is there. `wait`: wait for
/// another process warming the same cache, instead of leaving it the work.
/// The caller has put cargo on PATH ([`ensure_cargo_on_path`](crate::engine::toolchain::ensure_cargo_on_path)).
pub fn build(wait: bool) -> Result<Built, String> {
    let plan = plan()?;
    if plan.cache.is_ready(&plan.mark) {
        return Ok(Built::AlreadyReady);
    }
    let Some(_lock) = plan
        .cache
        .lock_ready_build(&plan.mark, wait)
        .map_err(|e| e.to_string())?
    else {
        return Ok(Built::Busy);
    };
    if plan.cache.is_ready(&plan.mark) {
        return Ok(Built::AlreadyReady);
    }
    let failed = plan.failed_stamp();
    if !wait && failed_recently(&failed) {
        return Err("the last warm-up failed less than an hour ago".to_owned());
    }
    // A warm-up that was stopped leaves its directory; the lock is ours.
    let tmp = plan.cache.root().join("tmp");
    let prefix = format!("{}-", plan.mark);
    for leftover in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        if leftover.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(leftover.path());
        }
    }
    // Each build its own directory, and so its own name in the statistics:
    // what it reports and marks is what it looked up, not a stopped one's.
    let scratch = tmp.join(format!("{prefix}{}", std::process::id()));
    let outcome = build_in(&plan, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    match &outcome {
        Err(error) => {
            let _ = std::fs::write(&failed, error);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(&failed);
        }
    }
    outcome
}

/// A background warm-up that failed (no network for the registry, a broken
/// toolchain) is not retried by every kernel start for an hour; `ferrolab
/// prebuild` always tries, and says why it failed.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

fn failed_recently(stamp: &Path) -> bool {
    std::fs::metadata(stamp)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|time| time.elapsed().ok())
        .is_some_and(|age| age < RETRY_AFTER)
}

impl Plan {
    fn failed_stamp(&self) -> PathBuf {
        self.cache
            .root()
            .join("ready")
            .join(format!("{}.failed", self.mark))
    }
}

fn build_in(plan: &Plan, scratch: &Path) -> Result<Built, String> {
    let crate_dir = scratch.join(crate::engine::evcxr_contract::SESSION_CRATE);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(crate_dir.join("src"))?;
        runtime::write_build_profile(scratch)?;
        let dependency = format!(
            "ferrolab-checkpoint = {{ path = {:?} }}",
            plan.runtime_dir.to_string_lossy()
        );
        std::fs::write(crate_dir.join("Cargo.toml"), session_manifest(&dependency))?;
        std::fs::write(crate_dir.join("src/lib.rs"), "")
    };
    write().map_err(|e| format!("cannot write the build directory: {e}"))?;
    let session = scratch.to_string_lossy().into_owned();
    let mut command = plan.cargo.build_command(&crate_dir);
    // The build cache's wrapper names the build in its statistics by this.
    command
        .env(crate::engine::evcxr_contract::TMPDIR_ENV, &session)
        .envs(ferrolab_buildcache::cargo_env_for_this_binary())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        return Err(format!(
            "cargo failed ({}):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let tag = session_tag(&session);
    plan.cache
        .mark_ready(&plan.mark, &tag)
        .map_err(|e| format!("built, but not all of it is in the cache: {e}"))?;
    let session = plan.cache.stats(Some(&tag)).session.unwrap_or_default();
    Ok(Built::Now {
        hits: session.hits,
        misses: session.misses,
    })
}

/// The kernel's warm-up process, while it may still run.
static RUNNING: Mutex<Option<Child>> = Mutex::new(None);

/// Starts the warm-up beside the kernel (see the module doc); does nothing
/// when it is switched off or the build cache is. Returns at once.
pub fn start_in_background() {
    if std::env::var(SWITCH_ENV).is_ok_and(|value| value.trim() == "0")
        || !Settings::from_env().enabled()
    {
        return;
    }
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(child) = running.as_mut()
        && let Ok(None) = child.try_wait()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = Command::new(exe);
    command
        .args(["prebuild", "--warm-up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: setpriority is async-signal-safe; nothing else runs here.
    unsafe {
        command.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => {
            log::info!("checkpoint runtime warm-up started (pid {})", child.id());
            *running = Some(child);
        }
        Err(error) => log::warn!("checkpoint runtime warm-up not started: {error}"),
    }
}

/// Ends the warm-up if it still runs (its cargo and rustc with it): the
/// session is about to compile the runtime itself.
pub fn stop() {
    let Some(mut child) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    if let Ok(None) = child.try_wait() {
        // Its own process group (pid = group id, still ours until waited).
        let group = -(child.id() as i32);
        // SAFETY: a plain kill(2) of a process group this process created.
        unsafe { libc::kill(group, libc::SIGKILL) };
        log::info!("checkpoint runtime warm-up stopped: the session builds the runtime");
    }
    let _ = child.wait();
}
