//! `%build_cache` (and `ferrolab cache ...`): the shared build cache seen
//! from a notebook or a terminal — where it is, how full, what it saved,
//! which crates this kernel got from it — and its upkeep (prune, clear,
//! verify, off/on for this kernel).
//!
//! The cache itself is `crates/buildcache`; here is what ferrolab knows about
//! its own builds ([`wrapper_config`]): evcxr's variables that change a
//! compile, the checkpoint runtime crate (a local crate cached because its
//! directory is named by its content), and the session name the kernel's
//! builds are counted under (its evcxr build directory).

use super::args;
use super::{Call, ErrorInfo, Kind, Magic, MagicResult};
use crate::kernel::{ExecuteOutcome, StreamName};
use crate::protocol::content::MimeBundle;
use clap::{Parser, Subcommand};
use ferrolab_buildcache::{AllowedLocal, Cache, Settings, WrapperConfig, session_tag};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Mutex;

pub fn magics() -> Vec<Magic> {
    vec![Magic {
        name: "build_cache",
        kind: Kind::Line,
        summary: "the shared build cache: size, hits, crates reused; prune, clear, off/on",
        help: HELP,
        run: build_cache,
    }]
}

const HELP: &str = "\
%build_cache                 where it is, how full, hits and misses (all kernels and this one)
%build_cache list            the cached crates: size, hits, last use
%build_cache prune [--max-mb N]  evict least-recently-used crates down to N MB (default: the limit)
%build_cache clear           delete every cached crate
%build_cache verify          re-check every entry's hashes
%build_cache off | on        stop or resume using the cache for this kernel's later builds

Compiled crates (everything `:dep` pulls from crates.io or git, and ferrolab's
own checkpoint runtime) are kept in a cache shared by all your kernels, so a
second kernel, a restarted one or another VM with the same cache directory
gets them in seconds instead of compiling them again. Your own path crates
are never cached (cargo builds them incrementally).

Settings (environment of the kernel, e.g. in kernel.json or before `jupyter lab`):
  FERROLAB_BUILD_CACHE_DIR   where (default ~/.cache/ferrolab/build-cache)
  FERROLAB_BUILD_CACHE_MB    size limit, least recently used crates go first (default 4096; 0 = off)

Fill it ahead of time from a terminal: ferrolab prebuild 'regex = \"1\"'

Example:
    :dep regex = \"1\"
    %build_cache";

#[derive(Parser, Debug)]
#[command(name = "%build_cache", disable_help_flag = true)]
struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

/// What both `%build_cache` and `ferrolab cache` do to the cache itself.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Maintenance {
    /// Location, size, hits and misses.
    Stats,
    /// The cached crates: size, hits, last use.
    List,
    /// Evict least-recently-used crates down to a size.
    Prune {
        /// Target size in MB (default: FERROLAB_BUILD_CACHE_MB).
        #[arg(long)]
        max_mb: Option<u64>,
    },
    /// Delete every cached crate.
    Clear,
    /// Re-check every entry's hashes.
    Verify,
}

/// `%build_cache`'s subcommands: the maintenance ones, and the switch for
/// this kernel's later builds.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
enum Action {
    #[command(flatten)]
    Maintain(Maintenance),
    /// Stop using the cache for this kernel's later builds.
    Off,
    /// Use the cache again for this kernel's later builds.
    On,
}

/// `Some(true/false)` once `%build_cache on/off` ran in this kernel.
static SWITCHED: Mutex<Option<bool>> = Mutex::new(None);

/// What the rustc wrapper needs to know about ferrolab's builds.
pub fn wrapper_config() -> WrapperConfig {
    WrapperConfig {
        allowed_local: vec![AllowedLocal {
            root: ferrolab_cache_root(),
            prefix: "checkpoint-runtime-".to_owned(),
        }],
        // evcxr's own wrapper, when it is on (`:cache`, `:allow_static_linking
        // 0`), rewrites the command line: these say how.
        extra_key_env: [
            "EVCXR_RUSTC_WRAPPER",
            "EVCXR_FORCE_DYLIB",
            "EVCXR_CORE_EXTERN",
        ]
        .map(String::from)
        .to_vec(),
        session: session_name(),
    }
}

/// Where ferrolab writes its runtime crates: the rule of
/// `magics::checkpoint::runtime` (a test below checks they agree).
fn ferrolab_cache_root() -> PathBuf {
    crate::paths::ferrolab_cache_dir()
}

/// The kernel's evcxr build directory names its builds in the statistics.
fn session_name() -> Option<String> {
    std::env::var("EVCXR_TMPDIR").ok()
}

fn build_cache(call: &mut Call) -> MagicResult {
    let parsed: Args = args::parse(call.name, call.args)?;
    match parsed
        .action
        .unwrap_or(Action::Maintain(Maintenance::Stats))
    {
        Action::Off => switch(call, false),
        Action::On => switch(call, true),
        Action::Maintain(action) => {
            let session = session_name().map(|name| session_tag(&name));
            let report = run(&action, session.as_deref())
                .map_err(|e| ErrorInfo::new("BuildCacheError", e))?;
            Ok(Some(report.bundle()))
        }
    }
}

/// `%build_cache off|on`: sets the cache's variables for this kernel's cargo
/// (evcxr's `:build_env`), so the next build honours them.
fn switch(call: &mut Call, on: bool) -> MagicResult {
    let mut settings = Settings::from_env();
    let lines: Vec<String> = if on {
        if settings.problem.is_some() {
            return Err(ErrorInfo::new(
                "BuildCacheError",
                format!("cannot turn the build cache on: {}", settings.describe()),
            ));
        }
        if settings.limit_bytes == 0 {
            settings.limit_bytes = ferrolab_buildcache::DEFAULT_MB * 1024 * 1024;
        }
        let exe = std::env::current_exe()
            .map_err(|e| ErrorInfo::new("BuildCacheError", format!("cannot find ferrolab: {e}")))?;
        let mut lines: Vec<String> = settings
            .cargo_env(&exe)
            .into_iter()
            .map(|(key, value)| format!(":build_env {key}={value}"))
            .collect();
        lines.push(format!(
            ":build_env {}={}",
            ferrolab_buildcache::MB_ENV,
            settings.limit_bytes / (1024 * 1024)
        ));
        lines
    } else {
        vec![format!(":build_env {}=0", ferrolab_buildcache::MB_ENV)]
    };
    if let ExecuteOutcome::Error(error) = call.engine.execute(&lines.join("\n"), 1, call.cell) {
        return Err(ErrorInfo::new("BuildCacheError", error.evalue));
    }
    *SWITCHED.lock().unwrap_or_else(|p| p.into_inner()) = Some(on);
    let message = if on {
        format!(
            "Build cache on for this kernel's next builds: {}",
            settings.describe()
        )
    } else {
        "Build cache off for this kernel's next builds (other kernels still use it).".to_owned()
    };
    call.cell
        .stream(StreamName::Stdout, &format!("{message}\n"));
    Ok(None)
}

/// A report: text for people, JSON for programs.
pub struct Report {
    pub text: String,
    pub json: Value,
}

impl Report {
    fn bundle(&self) -> MimeBundle {
        let mut bundle = MimeBundle::new();
        bundle.insert("text/plain".into(), Value::String(self.text.clone()));
        bundle.insert("application/json".into(), self.json.clone());
        bundle
    }
}

/// Runs one action against the cache the environment names (`session`: the
/// tag whose activity is shown as "this kernel").
pub fn run(action: &Maintenance, session: Option<&str>) -> Result<Report, String> {
    let settings = Settings::from_env();
    let switched = *SWITCHED.lock().unwrap_or_else(|p| p.into_inner());
    let state = match (switched, settings.enabled()) {
        (Some(false), _) => "off for this kernel (%build_cache off)".to_owned(),
        (Some(true), _) | (None, true) => "on".to_owned(),
        (None, false) => settings.describe(),
    };
    if !settings.enabled() && switched != Some(true) && *action == Maintenance::Stats {
        return Ok(Report {
            text: format!("Build cache: {state}"),
            json: json!({"enabled": false, "state": state, "dir": settings.dir}),
        });
    }
    let limit = if settings.limit_bytes > 0 {
        settings.limit_bytes
    } else {
        ferrolab_buildcache::DEFAULT_MB * 1024 * 1024
    };
    let cache =
        Cache::open_at(&settings.dir, limit).map_err(|e| format!("build cache unusable: {e}"))?;
    match action {
        Maintenance::Stats => Ok(stats(&cache, &state, session)),
        Maintenance::List => Ok(list(&cache)),
        Maintenance::Prune { max_mb } => {
            let target = max_mb.map_or(limit, |mb| mb.saturating_mul(1024 * 1024));
            let report = cache
                .prune(target)
                .ok_or("another process is pruning the cache right now; try again")?;
            Ok(Report {
                text: format!(
                    "Evicted {} crate builds ({}); kept {} ({}).",
                    report.evicted,
                    size(report.freed_bytes),
                    report.kept,
                    size(report.kept_bytes)
                ),
                json: serde_json::to_value(&report).unwrap_or_default(),
            })
        }
        Maintenance::Clear => {
            let removed = cache.clear().map_err(|e| e.to_string())?;
            Ok(Report {
                text: format!(
                    "Removed {removed} crate builds from {}.",
                    cache.root().display()
                ),
                json: json!({"removed": removed}),
            })
        }
        Maintenance::Verify => {
            let problems = cache.verify();
            let entries = cache.entries().len();
            let text = if problems.is_empty() {
                format!("All {entries} entries are intact.")
            } else {
                let lines: Vec<String> = problems
                    .iter()
                    .map(|(key, problem)| format!("  {key}: {problem}"))
                    .collect();
                format!(
                    "{} problems in {entries} entries (they are removed when next looked up; `prune` or `clear` removes them now):\n{}",
                    problems.len(),
                    lines.join("\n")
                )
            };
            Ok(Report {
                text,
                json: json!({"entries": entries, "problems": problems}),
            })
        }
    }
}

fn stats(cache: &Cache, state: &str, session: Option<&str>) -> Report {
    let stats = cache.stats(session);
    let totals = &stats.totals;
    let lookups = totals.hits + totals.misses;
    let rate = (totals.hits * 100)
        .checked_div(lookups)
        .map_or(String::new(), |percent| format!(" ({percent}% hits)"));
    let mut text = format!(
        "Build cache: {state}\n\
         Location: {}\n\
         Size: {} of {} in {} crate builds\n\
         All kernels: {} hits, {} misses{rate}; saved ≈ {} of compiling; {} stored, {} evicted",
        stats.dir.display(),
        size(stats.bytes),
        size(stats.limit_bytes),
        stats.entries,
        totals.hits,
        totals.misses,
        duration(totals.saved_ms),
        totals.stores,
        totals.evictions,
    );
    if totals.errors + totals.corrupt > 0 {
        text.push_str(&format!(
            "\nProblems: {} results not stored (see the build output), {} damaged entries removed",
            totals.errors, totals.corrupt
        ));
    }
    if let Some(session) = &stats.session {
        text.push_str(&format!(
            "\nThis kernel: {} hits, {} misses; saved ≈ {}",
            session.hits,
            session.misses,
            duration(session.saved_ms)
        ));
        if !session.crates_hit.is_empty() {
            text.push_str(&format!(
                "\n  from the cache: {}",
                names(&session.crates_hit)
            ));
        }
        if !session.crates_missed.is_empty() {
            text.push_str(&format!("\n  compiled: {}", names(&session.crates_missed)));
        }
    }
    let runtime = crate::magics::checkpoint::warmup::status();
    if let Some((runtime, error)) = &runtime {
        use crate::magics::checkpoint::warmup::Status;
        text.push_str("\nferrolab's own crates (the checkpoint runtime): ");
        text.push_str(&match runtime {
            Status::Ready => "in the cache".to_owned(),
            Status::Warming => "being compiled in the background".to_owned(),
            Status::Missing => "not in the cache (the next first :dep compiles them)".to_owned(),
            Status::Failed => format!(
                "not in the cache; compiling them in the background failed (`ferrolab prebuild` tries again and shows why): {}",
                error.as_deref().unwrap_or("").lines().next().unwrap_or("")
            ),
        });
    }
    let mut json = serde_json::to_value(&stats).unwrap_or_default();
    if let Some((runtime, _)) = runtime {
        json["runtime"] = Value::String(runtime.as_str().to_owned());
    }
    json["state"] = Value::String(state.to_owned());
    json["enabled"] = Value::Bool(state == "on");
    Report { text, json }
}

fn list(cache: &Cache) -> Report {
    let entries = cache.entries();
    let now = ferrolab_buildcache::events::now_ms();
    let mut text = format!("{:<28} {:>10} {:>6}  last used\n", "crate", "size", "hits");
    for entry in &entries {
        text.push_str(&format!(
            "{:<28} {:>10} {:>6}  {} ago\n",
            entry.crate_name,
            size(entry.bytes),
            entry.hits,
            duration(now.saturating_sub(entry.last_used_ms))
        ));
    }
    text.push_str(&format!("{} crate builds", entries.len()));
    Report {
        text,
        json: serde_json::to_value(&entries).unwrap_or_default(),
    }
}

fn names(set: &std::collections::BTreeSet<String>) -> String {
    let all: Vec<&str> = set.iter().map(String::as_str).collect();
    if all.len() > 12 {
        format!("{} and {} more", all[..12].join(", "), all.len() - 12)
    } else {
        all.join(", ")
    }
}

fn size(bytes: u64) -> String {
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if mb >= 1024.0 {
        format!("{:.1} GB", mb / 1024.0)
    } else {
        format!("{mb:.1} MB")
    }
}

fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        3600..86400 => format!("{} h {} min", seconds / 3600, seconds / 60 % 60),
        _ => format!("{} days", seconds / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_runtime_is_an_allowed_local_crate() {
        // The path the kernel adds with the user's first :dep.
        let state = crate::magics::checkpoint::CheckpointState::default();
        let code = crate::magics::checkpoint::piggyback(":dep itoa = \"1\"", &state).unwrap();
        let path = code
            .split("path = \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        let source = PathBuf::from(path).join("src/lib.rs");
        let config = wrapper_config();
        assert!(
            config.allowed_local[0].crate_dir(&source).is_some(),
            "{source:?} is not under {:?}",
            config.allowed_local
        );
    }

    #[test]
    fn subcommands_parse() {
        let parse = |text: &str| args::parse::<Args>("build_cache", text).map(|a| a.action);
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(
            parse("list").unwrap(),
            Some(Action::Maintain(Maintenance::List))
        );
        assert_eq!(
            parse("prune --max-mb 100").unwrap(),
            Some(Action::Maintain(Maintenance::Prune { max_mb: Some(100) }))
        );
        assert_eq!(parse("off").unwrap(), Some(Action::Off));
        assert!(parse("explode").is_err());
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(size(5 * 1024 * 1024), "5.0 MB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GB");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(125_000), "2 min 5 s");
    }
}
