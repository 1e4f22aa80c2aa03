//! Reading one rustc command line, as cargo gives it to a `RUSTC_WRAPPER`:
//! whether its result may be cached, where it writes, and which part of it
//! names the session's build directory.
//!
//! Cacheable: a crate compiled by cargo (`--crate-name`, `--out-dir`, JSON
//! artifact notifications, emitting only dep-info/metadata/link) that is not
//! incremental (cargo compiles registry and git crates without incremental;
//! local crates, which people edit, with it) — or an incremental one whose
//! crate directory the caller allowed (ferrolab's own content-addressed
//! runtime crates). Everything else (probes such as `rustc -vV`, code on
//! stdin, `--print`, `-o`) is passed through untouched.
//!
//! The target directory is the parent of the profile directory of cargo's
//! host `-L dependency=<target>/<profile>/deps`; every occurrence of it is
//! replaced by [`TARGET_PLACEHOLDER`] in what is keyed and stored, so two
//! sessions with different build directories share entries.

use std::path::{Path, PathBuf};

/// Stands for the session's target directory in keys and stored text.
pub const TARGET_PLACEHOLDER: &str = "<ferrolab-build-cache:target>";

/// A rustc invocation whose output may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The compiler as cargo named it (first argument after the wrapper).
    pub compiler: PathBuf,
    /// rustc's arguments, as given.
    pub args: Vec<String>,
    pub crate_name: String,
    /// How statistics and listings name it: the crate name, or
    /// `<package>:build` for a build script.
    pub label: String,
    /// The source file compiled (the crate root).
    pub source: PathBuf,
    pub out_dir: PathBuf,
    /// The build's target directory (normalised away in keys).
    pub target_dir: PathBuf,
    pub incremental: bool,
    /// `--extern name=path` (path absent for sysroot crates).
    pub externs: Vec<(String, Option<PathBuf>)>,
    /// `-l static=name` libraries (bundled into the output).
    pub static_libs: Vec<String>,
    /// `-L` search directories (any kind), for finding static libraries.
    pub search_dirs: Vec<PathBuf>,
}

/// rustc options that take their value as the next argument.
const TAKES_VALUE: &[&str] = &[
    "-C",
    "-L",
    "-l",
    "-A",
    "-W",
    "-D",
    "-F",
    "-Z",
    "-o",
    "--cfg",
    "--check-cfg",
    "--crate-type",
    "--crate-name",
    "--edition",
    "--emit",
    "--print",
    "--out-dir",
    "--explain",
    "--target",
    "--cap-lints",
    "--error-format",
    "--json",
    "--color",
    "--extern",
    "--sysroot",
    "--remap-path-prefix",
    "--force-warn",
    "--codegen",
    "--env-set",
    "--diagnostic-width",
];

/// Parses `compiler args...`; `Err` says why the call is not cacheable.
/// `allowed_local` names directories whose incremental (local) crates may be
/// cached anyway because their path changes whenever their content does.
pub fn parse(argv: &[String], allowed_local: &[AllowedLocal]) -> Result<Invocation, &'static str> {
    let (compiler, args) = argv.split_first().ok_or("no compiler given")?;
    let compiler = PathBuf::from(compiler);
    let compiler_name = compiler
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    if !compiler_name.starts_with("rustc") {
        return Err("not rustc");
    }
    let mut options: Vec<(&str, &str)> = Vec::new();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let arg = arg.as_str();
        if arg == "-" {
            return Err("source on stdin");
        }
        if let Some((flag, value)) = split_joined(arg) {
            options.push((flag, value));
        } else if TAKES_VALUE.contains(&arg) {
            let value = iter.next().ok_or("option without its value")?;
            options.push((arg, value.as_str()));
        } else if arg.starts_with('-') {
            options.push((arg, ""));
        } else {
            positional.push(arg);
        }
    }
    let [source] = positional[..] else {
        return Err("not exactly one source file");
    };
    let value = |flag: &str| {
        options
            .iter()
            .rev()
            .find(|(name, _)| *name == flag)
            .map(|(_, value)| *value)
    };
    let values = |flag: &'static str| {
        options
            .iter()
            .filter(move |(name, _)| *name == flag)
            .map(|(_, value)| *value)
    };
    for refused in [
        "-o",
        "--print",
        "--explain",
        "-V",
        "--version",
        "-vV",
        "--test",
    ] {
        if value(refused).is_some() {
            return Err("not a plain crate build");
        }
    }
    let crate_name = value("--crate-name").ok_or("no --crate-name")?.to_owned();
    let out_dir = PathBuf::from(value("--out-dir").ok_or("no --out-dir")?);
    if value("--error-format") != Some("json")
        || !value("--json").is_some_and(|json| json.split(',').any(|kind| kind == "artifacts"))
    {
        return Err("no JSON artifact notifications");
    }
    let emit = value("--emit").ok_or("no --emit")?;
    if !emit
        .split(',')
        .all(|kind| matches!(kind, "dep-info" | "metadata" | "link"))
    {
        return Err("emits something other than dep-info, metadata and link");
    }
    let incremental = values("-C").any(|codegen| codegen.starts_with("incremental="));
    let source = PathBuf::from(source);
    if incremental
        && !allowed_local
            .iter()
            .any(|allowed| allowed.contains(&source))
    {
        return Err("incremental (a local crate)");
    }
    let mut dependency_dirs: Vec<&str> = values("-L")
        .filter_map(|dir| dir.strip_prefix("dependency="))
        .collect();
    dependency_dirs.sort_by_key(|dir| dir.len());
    let host_deps = Path::new(dependency_dirs.first().ok_or("no -L dependency=")?);
    let target_dir = host_deps
        .parent()
        .and_then(Path::parent)
        .filter(|_| host_deps.ends_with("deps"))
        .ok_or("cannot tell the target directory")?
        .to_path_buf();
    if !out_dir.starts_with(&target_dir) {
        return Err("output outside the target directory");
    }
    let target = target_dir.to_str().ok_or("non-UTF-8 target directory")?;
    if target.len() < 2
        || target
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | ':'))
    {
        return Err("target directory with characters that need escaping");
    }
    let externs = values("--extern")
        .map(|spec| match spec.split_once('=') {
            Some((name, path)) => (name.to_owned(), Some(PathBuf::from(path))),
            None => (spec.to_owned(), None),
        })
        .collect();
    let static_libs = values("-l")
        .filter_map(|lib| {
            let (kind, name) = lib.split_once('=')?;
            let kind = kind.split(':').next().unwrap_or(kind);
            (kind == "static").then(|| name.split(':').next().unwrap_or(name).to_owned())
        })
        .collect();
    let search_dirs = values("-L")
        .map(|dir| PathBuf::from(dir.split_once('=').map_or(dir, |(_, path)| path)))
        .collect();
    Ok(Invocation {
        compiler,
        args: args.to_vec(),
        label: crate_name.clone(),
        crate_name,
        source,
        out_dir,
        target_dir,
        incremental,
        externs,
        static_libs,
        search_dirs,
    })
}

/// `--flag=value`, `-Cvalue`, `-Lvalue`, `-lvalue` forms.
fn split_joined(arg: &str) -> Option<(&str, &str)> {
    if let Some(rest) = arg.strip_prefix("--") {
        let (flag, _) = rest.split_once('=')?;
        let flag = &arg[..flag.len() + 2];
        return Some((flag, &arg[flag.len() + 1..]));
    }
    for short in ["-C", "-L", "-l", "-A", "-W", "-D", "-F", "-Z"] {
        if let Some(value) = arg.strip_prefix(short).filter(|value| !value.is_empty()) {
            return Some((short, value));
        }
    }
    None
}

/// A directory whose crates may be cached although cargo builds them
/// incrementally: crates directly under `root` whose directory name starts
/// with `prefix`. Their sources are hashed into the key as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedLocal {
    pub root: PathBuf,
    pub prefix: String,
}

impl AllowedLocal {
    /// The crate directory of `source` if it is one of these crates.
    pub fn crate_dir(&self, source: &Path) -> Option<PathBuf> {
        let relative = source.strip_prefix(&self.root).ok()?;
        let first = relative.components().next()?;
        let name = first.as_os_str().to_str()?;
        (name.starts_with(&self.prefix) && !name.contains(".."))
            .then(|| self.root.join(first.as_os_str()))
    }

    fn contains(&self, source: &Path) -> bool {
        self.crate_dir(source).is_some()
    }
}

impl Invocation {
    /// `text` with the target directory replaced by the placeholder.
    pub fn normalise(&self, text: &str) -> String {
        normalise(text, &self.target_dir)
    }

    /// `text` with the placeholder replaced by this build's target directory.
    pub fn localise(&self, text: &str) -> String {
        localise(text, &self.target_dir)
    }
}

pub fn normalise(text: &str, target_dir: &Path) -> String {
    match target_dir.to_str() {
        Some(target) if !target.is_empty() => text.replace(target, TARGET_PLACEHOLDER),
        _ => text.to_owned(),
    }
}

pub fn localise(text: &str, target_dir: &Path) -> String {
    text.replace(TARGET_PLACEHOLDER, &target_dir.to_string_lossy())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What cargo passed for `itoa` in a ferrolab session (captured).
    pub(crate) fn itoa_args(target: &str) -> Vec<String> {
        let text = format!(
            "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc|--crate-name|itoa|--edition=2021|/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/itoa-1.0.19/src/lib.rs|--error-format=json|--json=diagnostic-rendered-ansi,artifacts,future-incompat|--crate-type|lib|--emit=dep-info,metadata,link|-C|opt-level=2|-C|embed-bitcode=no|-C|codegen-units=16|-C|debug-assertions=on|--check-cfg|cfg(docsrs,test)|--check-cfg|cfg(feature, values(\"no-panic\"))|-C|metadata=6c7a07f71d34eb09|-C|extra-filename=-599fa3c426c701fd|-C|rpath|--out-dir|{target}/x86_64-unknown-linux-gnu/debug/deps|--target|x86_64-unknown-linux-gnu|-C|strip=debuginfo|-L|dependency={target}/x86_64-unknown-linux-gnu/debug/deps|-L|dependency={target}/debug/deps|--cap-lints|allow|-Cprefer-dynamic"
        );
        text.split('|').map(str::to_owned).collect()
    }

    #[test]
    fn a_registry_crate_is_cacheable() {
        let target = "/tmp/ferrolab-0/26529-e57c5c64/evcxr/target";
        let parsed = parse(&itoa_args(target), &[]).unwrap();
        assert_eq!(parsed.crate_name, "itoa");
        assert_eq!(parsed.target_dir, Path::new(target));
        assert_eq!(
            parsed.out_dir,
            Path::new(target).join("x86_64-unknown-linux-gnu/debug/deps")
        );
        assert!(!parsed.incremental);
        assert!(parsed.source.ends_with("itoa-1.0.19/src/lib.rs"));
        let line = format!("--out-dir={target}/x");
        assert_eq!(
            parsed.normalise(&line),
            format!("--out-dir={TARGET_PLACEHOLDER}/x")
        );
        assert_eq!(parsed.localise(&parsed.normalise(&line)), line);
    }

    #[test]
    fn a_build_script_is_cacheable_with_the_host_target_dir() {
        let target = "/tmp/s/evcxr/target";
        let args: Vec<String> = format!("rustc --crate-name build_script_build --edition=2021 /r/serde_core-1.0.229/build.rs --error-format=json --json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type bin --emit=dep-info,link -C embed-bitcode=no --out-dir {target}/debug/build/serde_core-67c19eae3fb38198 -L dependency={target}/debug/deps --cap-lints allow")
            .split(' ')
            .map(str::to_owned)
            .collect();
        let parsed = parse(&args, &[]).unwrap();
        assert_eq!(parsed.target_dir, Path::new(target));
    }

    #[test]
    fn probes_and_local_crates_are_passed_through() {
        let target = "/t/target";
        let mut incremental = itoa_args(target);
        incremental.push(format!("-Cincremental={target}/inc"));
        assert_eq!(parse(&incremental, &[]), Err("incremental (a local crate)"));
        let allowed = AllowedLocal {
            root: PathBuf::from("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f"),
            prefix: "itoa-".into(),
        };
        assert!(parse(&incremental, std::slice::from_ref(&allowed)).is_ok());
        let other = AllowedLocal {
            prefix: "ryu-".into(),
            ..allowed
        };
        assert!(parse(&incremental, &[other]).is_err());

        let probe: Vec<String> = ["rustc", "-vV"].map(String::from).to_vec();
        assert!(parse(&probe, &[]).is_err());
        let stdin: Vec<String> = ["rustc", "-", "--crate-name", "___", "--print=file-names"]
            .map(String::from)
            .to_vec();
        assert_eq!(parse(&stdin, &[]), Err("source on stdin"));
        let mut printing = itoa_args(target);
        printing.push("--print=cfg".into());
        assert!(parse(&printing, &[]).is_err());
        let mut llvm_ir = itoa_args(target);
        llvm_ir.push("--emit=llvm-ir".into());
        assert!(parse(&llvm_ir, &[]).is_err());
        let mut not_rustc = itoa_args(target);
        not_rustc[0] = "/usr/bin/clippy-driver".into();
        assert_eq!(parse(&not_rustc, &[]), Err("not rustc"));
    }

    #[test]
    fn odd_target_directories_are_not_cached() {
        assert!(parse(&itoa_args("/tmp/with space/target"), &[]).is_err());
        assert!(parse(&itoa_args("/tmp/quote\"/target"), &[]).is_err());
    }

    #[test]
    fn externs_and_static_libraries_are_found() {
        let mut args = itoa_args("/t/target");
        args.extend(
            [
                "--extern",
                "memchr=/t/target/x/debug/deps/libmemchr-1.rmeta",
                "--extern",
                "proc_macro",
                "-l",
                "static:+whole-archive=ring_core",
                "-L",
                "native=/t/target/debug/build/ring-1/out",
            ]
            .map(String::from),
        );
        let parsed = parse(&args, &[]).unwrap();
        assert_eq!(
            parsed.externs,
            vec![
                (
                    "memchr".into(),
                    Some(PathBuf::from("/t/target/x/debug/deps/libmemchr-1.rmeta"))
                ),
                ("proc_macro".into(), None)
            ]
        );
        assert_eq!(parsed.static_libs, vec!["ring_core".to_owned()]);
        assert!(
            parsed
                .search_dirs
                .contains(&PathBuf::from("/t/target/debug/build/ring-1/out"))
        );
    }
}
