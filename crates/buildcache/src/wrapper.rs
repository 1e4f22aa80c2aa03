//! The rustc wrapper: what the binary does when cargo runs it as
//! `RUSTC_WRAPPER` with [`WRAPPER_ENV`](crate::settings::WRAPPER_ENV) set.
//!
//! A call that cannot be cached is handed on untouched (the caller `exec`s
//! the next step, so stdin, the jobserver and the exit status stay as they
//! were). A cacheable one is looked up: a hit restores the artifacts and
//! replays rustc's recorded output, artifact notifications rewritten to this
//! build's directory; a miss runs the next step (rustc, or another wrapper),
//! passes its output through as it comes (cargo starts dependent crates as
//! soon as it reads the metadata notification) while recording it, and
//! stores the result when the compile succeeded. The cache never fails a
//! build: when it cannot look up or store, the compile simply runs.

use crate::events::Kind;
use crate::invocation::{self, AllowedLocal};
use crate::settings::Settings;
use crate::store::{Cache, CompileResult, Miss, Stored};
use crate::{digest, key, rustc_id};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Output kept for the cache per stream; a compile that prints more is not stored.
const MAX_RECORDED: usize = 16 * 1024 * 1024;

/// What the embedding binary knows about its builds.
#[derive(Debug, Clone, Default)]
pub struct WrapperConfig {
    /// Local crates that may be cached although cargo builds them incrementally.
    pub allowed_local: Vec<AllowedLocal>,
    /// More environment variables that change the output of the next step
    /// (e.g. a wrapper behind this one that rewrites the command line).
    pub extra_key_env: Vec<String>,
    /// Names the build's session in the statistics.
    pub session: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not cacheable: run the next step in this process's place.
    PassThrough,
    /// Done: exit with this status.
    Exit(i32),
}

/// A short stable name for a session (as the statistics show it).
pub fn session_tag(name: &str) -> String {
    digest::bytes(name.as_bytes())[..12].to_owned()
}

/// The process environment, as the key and the lookup read it.
pub struct Env {
    vars: std::collections::BTreeMap<String, String>,
}

impl Env {
    pub fn current() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.vars.keys().cloned().collect()
    }
}

/// Runs as cargo's rustc wrapper and never returns. `argv` is what cargo
/// passed after the wrapper (the compiler, then its arguments); `next` runs
/// the compile without the cache.
pub fn main(argv: Vec<OsString>, mut next: Command, config: WrapperConfig) -> ! {
    use std::os::unix::process::CommandExt;
    let settings = Settings::from_env();
    let outcome = wrap(
        &settings,
        &argv,
        &mut next,
        &config,
        &Env::current(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    match outcome {
        Outcome::Exit(code) => std::process::exit(code),
        Outcome::PassThrough => {
            let error = next.exec();
            eprintln!("ferrolab: cannot run {:?}: {error}", next.get_program());
            std::process::exit(127)
        }
    }
}

/// The wrapper's work, with its environment and output streams given.
pub fn wrap(
    settings: &Settings,
    argv: &[OsString],
    next: &mut Command,
    config: &WrapperConfig,
    env: &Env,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> Outcome {
    if !settings.enabled() {
        return Outcome::PassThrough;
    }
    let Some(args) = argv
        .iter()
        .map(|arg| arg.to_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
    else {
        return Outcome::PassThrough;
    };
    let Ok(mut invocation) = invocation::parse(&args, &config.allowed_local) else {
        return Outcome::PassThrough;
    };
    if invocation.crate_name == "build_script_build"
        && let Some(package) = env.get("CARGO_PKG_NAME")
    {
        invocation.label = format!("{package}:build");
    }
    let Ok(cache) = Cache::open(settings) else {
        return Outcome::PassThrough;
    };
    let Ok(identity) = rustc_id::identity(&invocation.compiler, &cache.rustc_dir()) else {
        return Outcome::PassThrough;
    };
    let lookup = |name: &str| env.get(name);
    let Ok(key) = key::compute(
        &invocation,
        &identity,
        &lookup,
        &env.names(),
        &config.extra_key_env,
        &config.allowed_local,
    ) else {
        return Outcome::PassThrough;
    };
    let session = session_tag(
        config
            .session
            .as_deref()
            .unwrap_or(&invocation.target_dir.to_string_lossy()),
    );
    let crate_name = invocation.label.as_str();
    match cache.restore(&key.id, &invocation, &lookup) {
        Ok(restored) => {
            let _ = stdout.write_all(restored.stdout.as_bytes());
            let _ = stdout.flush();
            let _ = stderr.write_all(restored.stderr.as_bytes());
            let _ = stderr.flush();
            cache.record(
                Kind::Hit,
                &key.id,
                &session,
                crate_name,
                restored.compile_ms,
            );
            return Outcome::Exit(0);
        }
        Err(Miss::Corrupt(why)) => {
            cache.record(Kind::Corrupt, &key.id, &session, crate_name, 0);
            let _ = writeln!(
                stderr,
                "ferrolab build cache: removed a damaged entry for {crate_name} ({why}); compiling it"
            );
        }
        Err(_) => {}
    }
    cache.record(Kind::Miss, &key.id, &session, crate_name, 0);

    let started = Instant::now();
    next.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match next.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = writeln!(
                stderr,
                "ferrolab: cannot run {:?}: {error}",
                next.get_program()
            );
            return Outcome::Exit(127);
        }
    };
    let child_out = child.stdout.take();
    let child_err = child.stderr.take();
    let (recorded_out, recorded_err) = std::thread::scope(|scope| {
        let out = scope.spawn(|| tee(child_out, stdout));
        let err = tee(child_err, stderr);
        (out.join().unwrap_or(None), err)
    });
    let status = match child.wait() {
        Ok(status) => status,
        Err(error) => {
            let _ = writeln!(stderr, "ferrolab: lost the compiler: {error}");
            return Outcome::Exit(101);
        }
    };
    let code = exit_code(status);
    let compile_ms = started.elapsed().as_millis() as u64;
    let (Some(recorded_out), Some(recorded_err)) = (recorded_out, recorded_err) else {
        return Outcome::Exit(code);
    };
    if code != 0 {
        return Outcome::Exit(code);
    }
    let result = CompileResult {
        stdout: &recorded_out,
        stderr: &recorded_err,
        compile_ms,
    };
    match cache.store(&key.id, &key.inputs, &invocation, &result) {
        Ok(Stored::Published { bytes }) => {
            cache.record(Kind::Store, &key.id, &session, crate_name, bytes);
            cache.maybe_prune();
        }
        Ok(Stored::AlreadyThere) => {}
        Ok(Stored::TooBig { bytes }) => {
            cache.record(Kind::Skip, &key.id, &session, crate_name, bytes);
        }
        Err(error) => {
            cache.record(Kind::Error, &key.id, &session, crate_name, 0);
            let _ = writeln!(
                stderr,
                "ferrolab build cache: {crate_name} was built but not stored ({error}); the build goes on"
            );
        }
    }
    Outcome::Exit(code)
}

/// Forwards a stream line by line as it comes, keeping a copy (`None` once
/// the copy would pass [`MAX_RECORDED`]).
fn tee(source: Option<impl Read>, sink: &mut (dyn Write + Send)) -> Option<Vec<u8>> {
    let source = source?;
    let mut reader = BufReader::new(source);
    let mut kept = Some(Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = sink.write_all(&line);
                let _ = sink.flush();
                if let Some(buffer) = kept.as_mut() {
                    if buffer.len() + line.len() > MAX_RECORDED {
                        kept = None;
                    } else {
                        buffer.extend_from_slice(&line);
                    }
                }
            }
        }
    }
    kept
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(101)
}
