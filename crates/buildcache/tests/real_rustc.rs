//! The wrapper around the real rustc: a crate compiled in one build
//! directory is restored into another without running the compiler, with its
//! paths rewritten; what must not be shared is not.

use ferrolab_buildcache::store::Cache;
use ferrolab_buildcache::wrapper::{Env, Outcome, wrap};
use ferrolab_buildcache::{Settings, WrapperConfig, session_tag};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

fn rustc() -> PathBuf {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc on PATH");
    PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim()).join("bin/rustc")
}

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    settings: Settings,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let settings = Settings {
            dir: root.join("cache"),
            limit_bytes: 512 * 1024 * 1024,
            problem: None,
        };
        Lab {
            _dir: dir,
            root,
            settings,
        }
    }

    /// Writes a crate's source and returns its root file.
    fn source(&self, name: &str, code: &str) -> PathBuf {
        let dir = self.root.join("src").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lib.rs");
        std::fs::write(&file, code).unwrap();
        file
    }

    /// A build directory, as a kernel session has one.
    fn target(&self, session: &str) -> PathBuf {
        let target = self.root.join(session).join("target");
        std::fs::create_dir_all(target.join("debug/deps")).unwrap();
        target
    }
}

/// rustc's arguments as cargo gives them for a registry crate.
fn cargo_args(
    name: &str,
    source: &Path,
    target: &Path,
    externs: &[(&str, PathBuf)],
) -> Vec<OsString> {
    let deps = target.join("debug/deps");
    let mut args: Vec<String> = vec![
        rustc().to_string_lossy().into_owned(),
        "--crate-name".into(),
        name.into(),
        "--edition=2021".into(),
        source.to_string_lossy().into_owned(),
        "--error-format=json".into(),
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat".into(),
        "--crate-type".into(),
        "lib".into(),
        "--emit=dep-info,metadata,link".into(),
        "-C".into(),
        "opt-level=0".into(),
        "-C".into(),
        format!("metadata={name}0001"),
        "-C".into(),
        format!("extra-filename=-{name}0001"),
        "--out-dir".into(),
        deps.to_string_lossy().into_owned(),
        "-L".into(),
        format!("dependency={}", deps.display()),
        "--cap-lints".into(),
        "allow".into(),
    ];
    for (crate_name, path) in externs {
        args.push("--extern".into());
        args.push(format!("{crate_name}={}", path.display()));
    }
    args.into_iter().map(OsString::from).collect()
}

struct Run {
    outcome: Outcome,
    stdout: String,
    stderr: String,
}

fn run(lab: &Lab, args: &[OsString], mut next: Command, env: &Env, session: &str) -> Run {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let config = WrapperConfig {
        session: Some(session.to_owned()),
        ..Default::default()
    };
    let outcome = wrap(
        &lab.settings,
        args,
        &mut next,
        &config,
        env,
        &mut stdout,
        &mut stderr,
    );
    Run {
        outcome,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// The real compile, with the variables the wrapper is told about.
fn compiler(args: &[OsString], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(&args[0]);
    command.args(&args[1..]);
    command.envs(vars.iter().copied());
    command
}

/// A compiler that must not run (it would fail the build).
fn no_compiler() -> Command {
    Command::new("/nonexistent/ferrolab-test-rustc")
}

fn env(pairs: &[(&str, &str)]) -> Env {
    let mut all: Vec<(String, String)> = vec![("PATH".into(), std::env::var("PATH").unwrap())];
    all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Env::from_pairs(all)
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_second_build_directory_gets_the_crate_without_compiling() {
    let lab = Lab::new();
    let source = lab.source("demo", "pub fn answer() -> u32 { 42 }\n");
    let first = lab.target("kernel-one");
    let args = cargo_args("demo", &source, &first, &[]);
    let vars = env(&[("CARGO_PKG_VERSION", "1.0.0")]);

    let built = run(&lab, &args, compiler(&args, &[]), &vars, "one");
    assert_eq!(built.outcome, Outcome::Exit(0), "{}", built.stderr);
    assert!(
        built.stderr.contains("\"emit\":\"metadata\""),
        "{}",
        built.stderr
    );
    let first_files = files(&first.join("debug/deps"));
    assert!(
        first_files.contains(&"libdemo-demo0001.rlib".to_owned()),
        "{first_files:?}"
    );

    let second = lab.target("kernel-two");
    let args_two = cargo_args("demo", &source, &second, &[]);
    let restored = run(&lab, &args_two, no_compiler(), &vars, "two");
    assert_eq!(restored.outcome, Outcome::Exit(0), "{}", restored.stderr);
    assert_eq!(files(&second.join("debug/deps")), first_files);
    let rlib =
        |target: &Path| std::fs::read(target.join("debug/deps/libdemo-demo0001.rlib")).unwrap();
    assert_eq!(rlib(&first), rlib(&second));
    // The replayed notifications and the dep-info name the new directory only.
    assert!(restored.stderr.contains(&second.display().to_string()));
    assert!(!restored.stderr.contains(&first.display().to_string()));
    let dep_info = std::fs::read_to_string(second.join("debug/deps/demo-demo0001.d")).unwrap();
    assert!(
        dep_info.contains(&second.display().to_string()),
        "{dep_info}"
    );
    assert!(
        !dep_info.contains(&first.display().to_string()),
        "{dep_info}"
    );
    assert_eq!(restored.stdout, built.stdout);

    let cache = Cache::open(&lab.settings).unwrap();
    let stats = cache.stats(Some(&session_tag("two")));
    assert_eq!(stats.entries, 1);
    assert_eq!(
        (stats.totals.hits, stats.totals.misses, stats.totals.stores),
        (1, 1, 1)
    );
    let session = stats.session.unwrap();
    assert_eq!((session.hits, session.misses), (1, 0));
    assert!(session.crates_hit.contains("demo"));
    assert!(cache.verify().is_empty());

    // A crate that depends on it links against the restored copy.
    let user_source = lab.source("user", "pub fn twice() -> u32 { demo::answer() * 2 }\n");
    let rlib_two = second.join("debug/deps/libdemo-demo0001.rlib");
    let user_args = cargo_args("user", &user_source, &second, &[("demo", rlib_two)]);
    let linked = run(&lab, &user_args, compiler(&user_args, &[]), &vars, "two");
    assert_eq!(linked.outcome, Outcome::Exit(0), "{}", linked.stderr);
}

#[test]
fn a_different_dependency_or_environment_is_a_different_entry() {
    let lab = Lab::new();
    let base = lab.source("base", "pub const N: u32 = 1;\n");
    let flavour = lab.source(
        "flavoured",
        "pub fn flavour() -> &'static str { env!(\"FERROLAB_TEST_FLAVOUR\") }\n",
    );
    let one = lab.target("one");
    let base_args = cargo_args("base", &base, &one, &[]);
    let vars = env(&[("FERROLAB_TEST_FLAVOUR", "vanilla")]);
    assert_eq!(
        run(&lab, &base_args, compiler(&base_args, &[]), &vars, "one").outcome,
        Outcome::Exit(0)
    );
    let base_rlib = one.join("debug/deps/libbase-base0001.rlib");
    let args = cargo_args("flavoured", &flavour, &one, &[("base", base_rlib.clone())]);
    assert_eq!(
        run(
            &lab,
            &args,
            compiler(&args, &[("FERROLAB_TEST_FLAVOUR", "vanilla")]),
            &vars,
            "one"
        )
        .outcome,
        Outcome::Exit(0)
    );

    // The crate read FERROLAB_TEST_FLAVOUR with env!: another value must compile.
    let two = lab.target("two");
    let base_two = cargo_args("base", &base, &two, &[]);
    assert_eq!(
        run(&lab, &base_two, no_compiler(), &vars, "two").outcome,
        Outcome::Exit(0)
    );
    let args_two = cargo_args(
        "flavoured",
        &flavour,
        &two,
        &[("base", two.join("debug/deps/libbase-base0001.rlib"))],
    );
    let chocolate = env(&[("FERROLAB_TEST_FLAVOUR", "chocolate")]);
    let refused = run(&lab, &args_two, no_compiler(), &chocolate, "two");
    assert_eq!(
        refused.outcome,
        Outcome::Exit(127),
        "it tried to compile: {}",
        refused.stderr
    );
    let same = run(&lab, &args_two, no_compiler(), &vars, "two");
    assert_eq!(same.outcome, Outcome::Exit(0), "{}", same.stderr);

    // A dependency with other contents under the same file name: a miss.
    let three = lab.target("three");
    let other_base = lab.source("base2", "pub const N: u32 = 2;\n");
    let other_args = cargo_args("base", &other_base, &three, &[]);
    assert_eq!(
        run(
            &lab,
            &other_args,
            compiler(&other_args, &[]),
            &vars,
            "three"
        )
        .outcome,
        Outcome::Exit(0)
    );
    let args_three = cargo_args(
        "flavoured",
        &flavour,
        &three,
        &[("base", three.join("debug/deps/libbase-base0001.rlib"))],
    );
    let rebuilt = run(&lab, &args_three, no_compiler(), &vars, "three");
    assert_eq!(
        rebuilt.outcome,
        Outcome::Exit(127),
        "a stale dependant was restored"
    );
}

#[test]
fn a_damaged_entry_is_removed_and_the_crate_compiled() {
    let lab = Lab::new();
    let source = lab.source("demo", "pub fn answer() -> u32 { 42 }\n");
    let vars = env(&[]);
    let one = lab.target("one");
    let args = cargo_args("demo", &source, &one, &[]);
    assert_eq!(
        run(&lab, &args, compiler(&args, &[]), &vars, "one").outcome,
        Outcome::Exit(0)
    );
    let cache = Cache::open(&lab.settings).unwrap();
    let key = cache.entries()[0].key.clone();
    let stored = lab
        .settings
        .dir
        .join("entries")
        .join(&key)
        .join("libdemo-demo0001.rlib");
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    assert_eq!(cache.verify().len(), 1, "verify sees the damage");

    let two = lab.target("two");
    let args_two = cargo_args("demo", &source, &two, &[]);
    let refused = run(&lab, &args_two, no_compiler(), &vars, "two");
    assert_eq!(refused.outcome, Outcome::Exit(127), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("removed a damaged entry"),
        "{}",
        refused.stderr
    );
    assert!(
        files(&two.join("debug/deps")).is_empty(),
        "nothing partial was left: {:?}",
        files(&two.join("debug/deps"))
    );
    assert_eq!(cache.entries().len(), 0);
    let rebuilt = run(&lab, &args_two, compiler(&args_two, &[]), &vars, "two");
    assert_eq!(rebuilt.outcome, Outcome::Exit(0));
    assert_eq!(cache.entries().len(), 1);
    assert_eq!(cache.stats(None).totals.corrupt, 1);
}

#[test]
fn a_result_that_cannot_be_stored_leaves_the_build_successful() {
    let lab = Lab::new();
    let source = lab.source("demo", "pub fn answer() -> u32 { 42 }\n");
    // Learn the entry's key from a build against another cache.
    let mut scout = Lab::new();
    scout.settings.dir = lab.root.join("scout-cache");
    let scout_target = lab.target("scout");
    let scout_args = cargo_args("demo", &source, &scout_target, &[]);
    assert_eq!(
        run(
            &scout,
            &scout_args,
            compiler(&scout_args, &[]),
            &env(&[]),
            "s"
        )
        .outcome,
        Outcome::Exit(0)
    );
    let key = Cache::open(&scout.settings).unwrap().entries()[0]
        .key
        .clone();
    // In the real cache, something that is not an entry sits in its place,
    // so publishing fails (as it would on a full or read-only disk).
    Cache::open(&lab.settings).unwrap();
    std::fs::write(lab.settings.dir.join("entries").join(&key), "in the way").unwrap();

    let one = lab.target("one");
    let args = cargo_args("demo", &source, &one, &[]);
    let result = run(&lab, &args, compiler(&args, &[]), &env(&[]), "one");
    assert_eq!(result.outcome, Outcome::Exit(0), "{}", result.stderr);
    assert!(
        result.stderr.contains("was built but not stored"),
        "{}",
        result.stderr
    );
    assert!(files(&one.join("debug/deps")).contains(&"libdemo-demo0001.rlib".to_owned()));
    assert_eq!(
        Cache::open(&lab.settings)
            .unwrap()
            .stats(None)
            .totals
            .errors,
        1
    );
}

#[test]
fn failed_compiles_uncacheable_calls_and_a_disabled_cache_pass_through() {
    let lab = Lab::new();
    let broken = lab.source("broken", "pub fn oops() -> u32 { \"no\" }\n");
    let one = lab.target("one");
    let args = cargo_args("broken", &broken, &one, &[]);
    let failed = run(&lab, &args, compiler(&args, &[]), &env(&[]), "one");
    assert_ne!(failed.outcome, Outcome::Exit(0));
    assert!(
        failed.stderr.contains("mismatched types"),
        "{}",
        failed.stderr
    );
    assert_eq!(Cache::open(&lab.settings).unwrap().entries().len(), 0);

    let probe: Vec<OsString> = vec![rustc().into(), "-vV".into()];
    assert_eq!(
        run(&lab, &probe, no_compiler(), &env(&[]), "one").outcome,
        Outcome::PassThrough
    );

    let mut off = Lab::new();
    off.settings.limit_bytes = 0;
    let source = off.source("demo", "pub fn a() {}\n");
    let target = off.target("one");
    let args = cargo_args("demo", &source, &target, &[]);
    assert_eq!(
        run(&off, &args, no_compiler(), &env(&[]), "one").outcome,
        Outcome::PassThrough
    );
    assert!(!off.settings.dir.exists(), "an off cache creates nothing");
}
