//! The cache key: everything a compile's output depends on, written out as
//! text (kept in the entry as `inputs.txt`, to explain a miss) and hashed.
//!
//! In it: the compiler's `rustc -vV`; every argument, with the target
//! directory normalised; the environment cargo sets for the crate
//! (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, `CARGO_CRATE_NAME`, `OUT_DIR`, ...)
//! plus the names the caller adds; the contents of every `--extern` file (a
//! dependency rebuilt differently gives a different key even under the same
//! file name); static libraries bundled with `-l static=`; the contents of
//! the crate's `OUT_DIR` (what its build script generated, normalised); and,
//! for allowed local crates, their source files. Variables the crate reads
//! with `env!` are checked separately, on lookup (see store).

use crate::digest;
use crate::invocation::{AllowedLocal, Invocation};
use std::path::{Path, PathBuf};

/// Bumped when the key's meaning changes.
const KEY_VERSION: &str = "ferrolab-build-cache key 1";
/// A build script output bigger than this is not hashed (nor cached).
const MAX_OUT_DIR_BYTES: u64 = 1 << 30;

/// Environment variables cargo sets for rustc that shape the output.
const CARGO_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "OUT_DIR",
    "RUSTC_BOOTSTRAP",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// 32 hex digits.
    pub id: String,
    /// The text hashed into `id`.
    pub inputs: String,
}

/// Computes the key; `Err` says why the call cannot be cached.
pub fn compute(
    invocation: &Invocation,
    compiler_identity: &str,
    env: &dyn Fn(&str) -> Option<String>,
    env_names: &[String],
    extra_env: &[String],
    allowed_local: &[AllowedLocal],
) -> Result<Key, String> {
    let mut text = String::new();
    let mut line = |kind: &str, value: &str| {
        text.push_str(kind);
        text.push(' ');
        text.push_str(&value.replace('\n', "\\n"));
        text.push('\n');
    };
    line("version", KEY_VERSION);
    line("compiler", compiler_identity.trim());
    for arg in &invocation.args {
        line("arg", &invocation.normalise(arg));
    }
    let mut names: Vec<&str> = env_names
        .iter()
        .map(String::as_str)
        .filter(|name| name.starts_with("CARGO_PKG_") || CARGO_ENV.contains(name))
        .chain(extra_env.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if let Some(value) = env(name) {
            line("env", &format!("{name}={}", invocation.normalise(&value)));
        }
    }
    for (name, path) in &invocation.externs {
        let Some(path) = path else {
            line("extern", name);
            continue;
        };
        let sha = digest::file(path)
            .map_err(|e| format!("cannot read the dependency {}: {e}", path.display()))?;
        line("extern", &format!("{name} {sha}"));
    }
    for lib in &invocation.static_libs {
        let file = format!("lib{lib}.a");
        let found = invocation
            .search_dirs
            .iter()
            .map(|dir| dir.join(&file))
            .find(|path| path.is_file());
        match found {
            Some(path) => {
                let sha = digest::file(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                line("static", &format!("{lib} {sha}"));
            }
            None => line("static", &format!("{lib} not-found")),
        }
    }
    if let Some(out_dir) = env("OUT_DIR") {
        let mut budget = MAX_OUT_DIR_BYTES;
        let tree = Tree {
            normalise: Some(&invocation.target_dir),
            skip_build_dirs: false,
        };
        for (path, sha) in tree.list(Path::new(&out_dir), &mut budget)? {
            line("out-dir", &format!("{path} {sha}"));
        }
    }
    if invocation.incremental {
        let crate_dir = allowed_local
            .iter()
            .find_map(|allowed| allowed.crate_dir(&invocation.source))
            .ok_or("incremental crate outside the allowed directories")?;
        let mut budget = MAX_OUT_DIR_BYTES;
        let tree = Tree {
            normalise: None,
            skip_build_dirs: true,
        };
        for (path, sha) in tree.list(&crate_dir, &mut budget)? {
            line("source", &format!("{path} {sha}"));
        }
    }
    let id = digest::bytes(text.as_bytes())[..32].to_owned();
    Ok(Key { id, inputs: text })
}

/// How to list a directory tree for the key.
struct Tree<'a> {
    /// Replace this path (the target directory) in file contents.
    normalise: Option<&'a Path>,
    /// Skip `target` directories and hidden entries (a crate directory's own
    /// build output and VCS data).
    skip_build_dirs: bool,
}

impl Tree<'_> {
    /// `(relative path, hash)` of every file below `root`, sorted.
    fn list(&self, root: &Path, budget: &mut u64) -> Result<Vec<(String, String)>, String> {
        let mut found = Vec::new();
        self.walk(root, root, budget, &mut found)?;
        found.sort();
        Ok(found)
    }

    fn walk(
        &self,
        root: &Path,
        dir: &Path,
        budget: &mut u64,
        found: &mut Vec<(String, String)>,
    ) -> Result<(), String> {
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir == root => {
                return Ok(());
            }
            Err(error) => return Err(format!("cannot list {}: {error}", dir.display())),
        };
        for item in listing {
            let item = item.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path: PathBuf = item.path();
            if self.skip_build_dirs && (name.starts_with('.') || name == "target") {
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .map_err(|_| "path outside its tree".to_owned())?
                .to_string_lossy()
                .into_owned();
            let kind = item
                .file_type()
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if kind.is_symlink() {
                let link = std::fs::read_link(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                found.push((relative, format!("symlink:{}", link.to_string_lossy())));
            } else if kind.is_dir() {
                self.walk(root, &path, budget, found)?;
            } else if kind.is_file() {
                let data = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                *budget = budget
                    .checked_sub(data.len() as u64)
                    .ok_or("build output too big to key")?;
                let sha = match self.normalise {
                    Some(target) => digest::replaced(
                        &data,
                        target.as_os_str().as_encoded_bytes(),
                        crate::invocation::TARGET_PLACEHOLDER.as_bytes(),
                    ),
                    None => digest::bytes(&data),
                };
                found.push((relative, sha));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::{parse, tests::itoa_args};
    use std::collections::HashMap;

    fn key_for(target: &str, env: &HashMap<&str, String>) -> Key {
        let invocation = parse(&itoa_args(target), &[]).unwrap();
        let names: Vec<String> = env.keys().map(|k| k.to_string()).collect();
        compute(
            &invocation,
            "rustc 1.95.0",
            &|name| env.get(name).cloned(),
            &names,
            &["EVCXR_FORCE_DYLIB".to_owned()],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn two_sessions_share_a_key_and_the_crate_environment_counts() {
        let base: HashMap<&str, String> = [
            ("CARGO_PKG_VERSION", "1.0.19".to_owned()),
            ("CARGO_MAKEFLAGS", "-j --jobserver-fds=9,10".to_owned()),
            ("HOME", "/root".to_owned()),
        ]
        .into();
        let one = key_for("/tmp/ferrolab-0/1-aaaa/evcxr/target", &base);
        let two = key_for("/tmp/ferrolab-0/2-bbbb/evcxr/target", &base);
        assert_eq!(one.id, two.id, "{}\n{}", one.inputs, two.inputs);
        assert!(one.inputs.contains("arg --out-dir"));
        assert!(!one.inputs.contains("1-aaaa"), "{}", one.inputs);
        // Unrelated variables (the jobserver, HOME) are not in it.
        let mut other = base.clone();
        other.insert("CARGO_MAKEFLAGS", "-j --jobserver-fds=3,4".into());
        other.insert("HOME", "/home/else".into());
        assert_eq!(
            key_for("/t/target", &other).id,
            key_for("/t/target", &base).id
        );
        // The crate's version, and evcxr's dylib switch, are.
        let mut newer = base.clone();
        newer.insert("CARGO_PKG_VERSION", "1.0.20".into());
        assert_ne!(
            key_for("/t/target", &newer).id,
            key_for("/t/target", &base).id
        );
        let mut dylib = base.clone();
        dylib.insert("EVCXR_FORCE_DYLIB", "1".into());
        assert_ne!(
            key_for("/t/target", &dylib).id,
            key_for("/t/target", &base).id
        );
    }

    #[test]
    fn dependency_contents_and_build_script_output_count() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let deps = target.join("debug/deps");
        let out = target.join("debug/build/itoa-1/out");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let dep = deps.join("libmemchr-1.rmeta");
        std::fs::write(&dep, b"one").unwrap();
        std::fs::write(
            out.join("gen.rs"),
            format!("include!(\"{}/x\");", target.display()),
        )
        .unwrap();
        let mut args = itoa_args(target.to_str().unwrap());
        args.push("--extern".into());
        args.push(format!("memchr={}", dep.display()));
        let invocation = parse(&args, &[]).unwrap();
        let env: HashMap<&str, String> = [("OUT_DIR", out.to_str().unwrap().to_owned())].into();
        let names = vec!["OUT_DIR".to_owned()];
        let key = || {
            compute(
                &invocation,
                "rustc",
                &|n| env.get(n).cloned(),
                &names,
                &[],
                &[],
            )
            .unwrap()
        };
        let first = key();
        assert!(first.inputs.contains("out-dir gen.rs"), "{}", first.inputs);
        std::fs::write(&dep, b"two").unwrap();
        let second = key();
        assert_ne!(first.id, second.id, "a rebuilt dependency changes the key");
        std::fs::write(out.join("gen.rs"), "other").unwrap();
        assert_ne!(
            second.id,
            key().id,
            "new build script output changes the key"
        );
    }

    #[test]
    fn build_script_output_naming_the_target_dir_is_normalised() {
        let key_in = |root: &Path| {
            let target = root.join("target");
            let out = target.join("debug/build/x-1/out");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(
                out.join("gen.rs"),
                format!("include!(\"{}/y\");", out.display()),
            )
            .unwrap();
            let invocation = parse(&itoa_args(target.to_str().unwrap()), &[]).unwrap();
            let env: HashMap<&str, String> = [("OUT_DIR", out.to_str().unwrap().to_owned())].into();
            let names = vec!["OUT_DIR".to_owned()];
            compute(
                &invocation,
                "rustc",
                &|n| env.get(n).cloned(),
                &names,
                &[],
                &[],
            )
            .unwrap()
            .id
        };
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        assert_eq!(key_in(one.path()), key_in(two.path()));
    }

    #[test]
    fn allowed_local_crates_are_keyed_by_their_sources() {
        let dir = tempfile::tempdir().unwrap();
        let crate_dir = dir.path().join("checkpoint-runtime-0.1.0-abc");
        std::fs::create_dir_all(crate_dir.join("src")).unwrap();
        std::fs::write(crate_dir.join("src/lib.rs"), "pub fn a() {}").unwrap();
        std::fs::write(crate_dir.join("Cargo.toml"), "[package]").unwrap();
        let allowed = vec![AllowedLocal {
            root: dir.path().to_path_buf(),
            prefix: "checkpoint-runtime-".into(),
        }];
        let mut args = itoa_args("/t/target");
        args[4] = crate_dir.join("src/lib.rs").to_string_lossy().into_owned();
        args.push("-C".into());
        args.push("incremental=/t/target/inc".into());
        let invocation = parse(&args, &allowed).unwrap();
        let key = || compute(&invocation, "rustc", &|_| None, &[], &[], &allowed).unwrap();
        let first = key();
        assert!(
            first.inputs.contains("source src/lib.rs"),
            "{}",
            first.inputs
        );
        std::fs::write(crate_dir.join("src/lib.rs"), "pub fn b() {}").unwrap();
        assert_ne!(first.id, key().id);
    }
}
