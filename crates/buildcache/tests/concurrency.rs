//! Several builds at once against one cache: real processes building,
//! restoring and evicting the same entries, and threads publishing the same
//! entry at the same instant. Every build must get exactly the right files
//! (or compile), and the cache must stay consistent.
//!
//! The compiler here is a small script that writes a 300 kB artifact (its
//! contents depend only on the crate name) and rustc's notifications, so the
//! processes spend their time in the cache, not in rustc.

use ferrolab_buildcache::store::{Cache, CompileResult, Stored};
use ferrolab_buildcache::wrapper::{Env, Outcome, wrap};
use ferrolab_buildcache::{Settings, WrapperConfig};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const CRATES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const ARTIFACT_BYTES: usize = 300_000;

/// Writes the fake compiler into `dir` once (builders share it).
fn fake_compiler(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("rustc-fake");
    if path.exists() {
        return path;
    }
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = "-vV" ]; then echo "rustc 0.0.0-fake"; exit 0; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --out-dir) out="$2"; shift ;;
    --crate-name) name="$2"; shift ;;
  esac
  shift
done
f="$out/lib$name-x.rlib"
yes "$name" | head -c {ARTIFACT_BYTES} > "$f.fake$$" && mv "$f.fake$$" "$f"
echo "$out/$name-x.d: /src/$name.rs" > "$out/$name-x.d"
echo "{{\"\$message_type\":\"artifact\",\"artifact\":\"$out/$name-x.d\",\"emit\":\"dep-info\"}}" >&2
echo "{{\"\$message_type\":\"artifact\",\"artifact\":\"$f\",\"emit\":\"link\"}}" >&2
"#
    );
    let staged = dir.join("rustc-fake.new");
    std::fs::write(&staged, script).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, &path).unwrap();
    path
}

fn expected_artifact(name: &str) -> Vec<u8> {
    format!("{name}\n")
        .bytes()
        .cycle()
        .take(ARTIFACT_BYTES)
        .collect()
}

fn settings(root: &Path, limit_bytes: u64) -> Settings {
    Settings {
        dir: root.join("cache"),
        limit_bytes,
        problem: None,
    }
}

/// Builds every crate `iterations` times, each time in a fresh build
/// directory, and checks what each build got.
fn builder(root: &Path, id: &str, iterations: usize) -> Result<(u64, u64), String> {
    let compiler = fake_compiler(root);
    let settings = settings(root, 64 * 1024 * 1024);
    let mut results = (0, 0);
    for iteration in 0..iterations {
        let target = root.join(format!("builder-{id}/{iteration}/target"));
        let out = target.join("debug/deps");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        for name in CRATES {
            let args: Vec<OsString> = [
                compiler.to_str().unwrap(),
                "--crate-name",
                name,
                &format!("/src/{name}.rs"),
                "--error-format=json",
                "--json=artifacts",
                "--crate-type",
                "lib",
                "--emit=dep-info,link",
                "--out-dir",
                out.to_str().unwrap(),
                "-L",
                &format!("dependency={}", out.display()),
            ]
            .iter()
            .map(OsString::from)
            .collect();
            let mut next = Command::new(&args[0]);
            next.args(&args[1..]);
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            let outcome = wrap(
                &settings,
                &args,
                &mut next,
                &WrapperConfig::default(),
                &Env::from_pairs([("PATH", std::env::var("PATH").unwrap())]),
                &mut stdout,
                &mut stderr,
            );
            let stderr = String::from_utf8_lossy(&stderr).into_owned();
            if outcome != Outcome::Exit(0) {
                return Err(format!("{name}: {outcome:?}: {stderr}"));
            }
            let rlib = std::fs::read(out.join(format!("lib{name}-x.rlib")))
                .map_err(|e| format!("{name}: {e}"))?;
            if rlib != expected_artifact(name) {
                return Err(format!("{name}: wrong artifact ({} bytes)", rlib.len()));
            }
            let dep_info = std::fs::read_to_string(out.join(format!("{name}-x.d")))
                .map_err(|e| format!("{name}: {e}"))?;
            if !dep_info.starts_with(&format!("{}/{name}-x.d:", out.display())) {
                return Err(format!("{name}: dep-info names another build: {dep_info}"));
            }
            if !stderr.contains(&format!("{}/lib{name}-x.rlib", out.display())) {
                return Err(format!(
                    "{name}: notifications name another build: {stderr}"
                ));
            }
            if stderr.contains("damaged") {
                return Err(format!("{name}: {stderr}"));
            }
            if stderr.contains("not stored") {
                results.1 += 1;
            }
            results.0 += 1;
        }
        let leftovers: Vec<String> = std::fs::read_dir(&out)
            .map_err(|e| e.to_string())?
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        if !leftovers.is_empty() {
            return Err(format!("staging files left behind: {leftovers:?}"));
        }
    }
    Ok(results)
}

/// Evicts everything, over and over, until `stop` exists.
fn pruner(root: &Path, stop: &Path) -> u64 {
    let cache = Cache::open(&settings(root, 1)).unwrap();
    let mut passes = 0;
    while !stop.exists() {
        cache.prune(0);
        passes += 1;
    }
    passes
}

/// Role of this test binary when the concurrency test starts it as a process.
const ROLE_ENV: &str = "FERROLAB_BUILDCACHE_TEST_ROLE";

#[test]
fn one_builder_alone_gets_hits_and_right_files() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("builder") => {
            let root = PathBuf::from(std::env::var("FERROLAB_BUILDCACHE_TEST_ROOT").unwrap());
            let id = std::env::var("FERROLAB_BUILDCACHE_TEST_ID").unwrap();
            if let Err(error) = builder(&root, &id, 6) {
                eprintln!("builder {id}: {error}");
                std::process::exit(3);
            }
            return;
        }
        Ok("pruner") => {
            let root = PathBuf::from(std::env::var("FERROLAB_BUILDCACHE_TEST_ROOT").unwrap());
            let passes = pruner(&root, &root.join("stop"));
            println!("pruner passes: {passes}");
            return;
        }
        _ => {}
    }
    let dir = tempfile::tempdir().unwrap();
    builder(dir.path(), "solo", 3).unwrap();
    let cache = Cache::open(&settings(dir.path(), 64 << 20)).unwrap();
    let stats = cache.stats(None);
    assert_eq!(stats.entries, CRATES.len() as u64);
    assert_eq!(stats.totals.misses, CRATES.len() as u64);
    assert_eq!(stats.totals.hits, 2 * CRATES.len() as u64);
    assert!(cache.verify().is_empty());
}

#[test]
fn builders_in_several_processes_with_constant_eviction_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_compiler(root);
    let me = std::env::current_exe().unwrap();
    let spawn = |role: &str, id: &str| {
        Command::new(&me)
            .args([
                "--exact",
                "one_builder_alone_gets_hits_and_right_files",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .env("FERROLAB_BUILDCACHE_TEST_ROOT", root)
            .env("FERROLAB_BUILDCACHE_TEST_ID", id)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let pruner = spawn("pruner", "p");
    let builders: Vec<_> = (0..3).map(|i| spawn("builder", &i.to_string())).collect();
    let mut failures = Vec::new();
    for builder in builders {
        let output = builder.wait_with_output().unwrap();
        if !output.status.success() {
            failures.push(String::from_utf8_lossy(&output.stderr).into_owned());
        }
    }
    std::fs::write(root.join("stop"), "").unwrap();
    let pruned = pruner.wait_with_output().unwrap();
    assert!(pruned.status.success());
    assert!(failures.is_empty(), "{failures:#?}");

    let cache = Cache::open(&settings(root, 64 << 20)).unwrap();
    assert!(cache.verify().is_empty(), "{:?}", cache.verify());
    let totals = cache.stats(None).totals;
    let lookups = (3 * 6 * CRATES.len()) as u64;
    assert_eq!(totals.hits + totals.misses, lookups, "{totals:?}");
    assert_eq!(totals.corrupt, 0);
    println!(
        "{} hits, {} misses, {} stores, {} evictions; {}",
        totals.hits,
        totals.misses,
        totals.stores,
        totals.evictions,
        String::from_utf8_lossy(&pruned.stdout).trim()
    );
}

#[test]
fn two_threads_publishing_one_entry_at_once_leave_one_good_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = Cache::open(&settings(root, 64 << 20)).unwrap();
    let barrier = std::sync::Barrier::new(2);
    let publish = |id: usize| {
        let target = root.join(format!("t{id}/target"));
        let out = target.join("debug/deps");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("libsame-x.rlib"), expected_artifact("same")).unwrap();
        let args: Vec<String> = [
            "rustc",
            "--crate-name",
            "same",
            "/src/same.rs",
            "--error-format=json",
            "--json=artifacts",
            "--emit=link",
            "--out-dir",
            out.to_str().unwrap(),
            "-L",
            &format!("dependency={}", out.display()),
        ]
        .map(String::from)
        .to_vec();
        let invocation = ferrolab_buildcache::invocation::parse(&args, &[]).unwrap();
        let stderr = format!(
            "{{\"artifact\":\"{}/libsame-x.rlib\",\"emit\":\"link\"}}\n",
            out.display()
        );
        barrier.wait();
        cache
            .store(
                "0123456789abcdef0123456789abcdef",
                "inputs",
                &invocation,
                &CompileResult {
                    stdout: b"",
                    stderr: stderr.as_bytes(),
                    compile_ms: 5,
                },
            )
            .unwrap()
    };
    let (one, two) = std::thread::scope(|scope| {
        let one = scope.spawn(|| publish(1));
        let two = scope.spawn(|| publish(2));
        (one.join().unwrap(), two.join().unwrap())
    });
    let published = [&one, &two]
        .iter()
        .filter(|s| matches!(s, Stored::Published { .. }))
        .count();
    assert_eq!(published, 1, "{one:?} {two:?}");
    assert!([&one, &two].contains(&&Stored::AlreadyThere));
    assert_eq!(cache.entries().len(), 1);
    assert!(cache.verify().is_empty());
    assert_eq!(
        std::fs::read_dir(root.join("cache/tmp")).unwrap().count(),
        0,
        "the loser's copy was removed"
    );
}
