//! Everything ferrolab relies on in evcxr beyond its public API, in one place.
//!
//! evcxr is pinned (`evcxr = "=0.22.0"` in Cargo.toml) because these are its
//! private details: the line protocol between evcxr and its runtime process
//! (which the relay sits in the middle of), the names it generates into a
//! cell's code, its build directory layout and the answers of its commands.
//! Each item below names where evcxr defines it, and the tests read the pinned
//! evcxr's own source (the files rustc compiled into this binary, as their
//! dep-info lists them) and check that it still says so: updating evcxr makes
//! them fail until each item is re-checked.
//!
//! The session prelude (`prelude/ferrolab.rs`) is Rust sent to the session, so
//! it spells the runtime markers out itself; a test checks it uses these.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the runtime process evcxr starts (`runtime.rs`,
/// `EVCXR_IS_RUNTIME_VAR`); ferrolab's binary starts its relay when it sees it.
pub const IS_RUNTIME_ENV: &str = "EVCXR_IS_RUNTIME";

/// The runtime prints this line when a cell's code returned (`runtime.rs`,
/// `EVCXR_EXECUTION_COMPLETE`); the relay flushes user output before passing it.
pub const EXECUTION_COMPLETE: &[u8] = b"EVCXR_EXECUTION_COMPLETE\n";

/// evcxr's command to the runtime that loads and runs a cell's library
/// (`eval_context.rs` writes it, `runtime.rs` reads it); the relay marks the
/// start of user code when the whole line reached the runtime.
pub const LOAD_AND_RUN: &[u8] = b"LOAD_AND_RUN ";

/// Every line of evcxr's runtime protocol on stdout starts with this; the
/// relay passes such lines to evcxr and everything else to the notebook.
pub const PROTOCOL_PREFIX: &[u8] = b"EVCXR_";

/// Rich content from the runtime: `EVCXR_BEGIN_CONTENT <mime>`, lines, then
/// `EVCXR_END_CONTENT` (`eval_context.rs`); the value of a cell is sent so.
pub const BEGIN_CONTENT: &[u8] = b"EVCXR_BEGIN_CONTENT";
pub const END_CONTENT: &[u8] = b"EVCXR_END_CONTENT";

/// The runtime's notice that user code panicked (`eval_context.rs`).
pub const PANIC_NOTIFICATION: &[u8] = b"EVCXR_PANIC_NOTIFICATION";

/// The runtime's line after a `?` in the cell's code returned an error, which
/// evcxr's generated `From` impl has printed to stderr just before
/// (`evcxr_internal_runtime.rs`, `eval_context.rs`). evcxr itself still
/// reports such a cell as a success.
pub const USER_ERROR_OCCURRED: &[u8] = b"EVCXR_ERROR_OCCURRED\n";

/// A runtime line asking the notebook for input (`evcxr_input`'s `GET_CMD`);
/// `<marker>:<prompt>` or, for a hidden answer, `<marker>_PASSWORD:<prompt>`.
pub const INPUT_REQUEST: &[u8] = b"EVCXR_INPUT_REQUEST";
pub const INPUT_REQUEST_PASSWORD: &[u8] = b"EVCXR_INPUT_REQUEST_PASSWORD";

/// The name evcxr generates after a cell's code; rustc labels that point past
/// the end of the user's code name it (evcxr cleans messages, not labels).
pub const VARIABLE_STORE: &str = "`evcxr_variable_store`";

/// The crate evcxr builds every cell as (`module.rs`, `CRATE_NAME`).
pub const SESSION_CRATE: &str = "ctx";

/// Its crate type, and the profile line that leaves rustc's local ThinLTO on
/// (`module.rs`, `get_cargo_toml_contents`; see `session_build`).
pub const SESSION_CRATE_TYPE: &str = "cdylib";
pub const SESSION_PROFILE_LTO: &str = "lto = false";

/// The session crate's manifest as evcxr writes it (`module.rs`,
/// `get_cargo_toml_contents`) at its default `:opt` (`eval_context.rs`,
/// `opt_level: "2"`), with `dependencies` as the `[dependencies]` table.
/// A build that must compile crates exactly as a session's first `:dep`
/// would (the checkpoint runtime's warm-up) uses it with [`SessionCargo`].
pub fn session_manifest(dependencies: &str) -> String {
    format!(
        "[package]\nname = \"{SESSION_CRATE}\"\nversion = \"1.0.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"{SESSION_CRATE_TYPE}\"]\npath = \"src/lib.rs\"\n\n\
         {SESSION_PROFILE}\n[dependencies]\n{dependencies}\n"
    )
}

/// evcxr's `[profile.dev]` for the session, line for line.
const SESSION_PROFILE: &str = "[profile.dev]
opt-level = 2
debug = false
strip = \"debuginfo\"
rpath = true
lto = false
debug-assertions = true
codegen-units = 16
panic = 'unwind'
incremental = true
overflow-checks = true
";

/// The variable through which evcxr's cargo names the standard library's
/// shared object (`module.rs`, `CORE_EXTERN_ENV`); it is part of a build
/// cache key, so a build that shares entries with sessions sets it alike.
pub const CORE_EXTERN_ENV: &str = "EVCXR_CORE_EXTERN";

/// How evcxr runs cargo for a session build (`eval_context.rs`,
/// `cargo_command`, `create_initial_config`, `core_extern`): the linker it
/// picks (mold, else lld, else the system's), the `RUSTFLAGS` that follow
/// from it, `--target` the host, the target directory, and the standard
/// library's shared object. Every part changes the command lines cargo gives
/// rustc, which key the build cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCargo {
    /// `mold`: cargo runs under `mold -run`.
    pub mold: bool,
    pub rustflags: String,
    /// The host triple (`rustc -vV`'s `host:`).
    pub target: String,
    /// `core=<target-libdir>/libstd-*.so`.
    pub core_extern: String,
    /// `rustc -vV` in full (the compiler's version and commit), read once
    /// with the host triple for whoever keys work by the compiler.
    pub compiler: String,
}

impl SessionCargo {
    /// What evcxr would use on this machine; `None` without a working rustc.
    pub fn of_this_machine() -> Option<SessionCargo> {
        let verbose = Command::new("rustc").arg("-vV").output().ok()?;
        let compiler = String::from_utf8(verbose.stdout).ok()?;
        let target = compiler
            .lines()
            .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))?;
        let libdir = crate::engine::toolchain::target_libdir()?;
        let extension = if cfg!(target_os = "macos") {
            ".dylib"
        } else {
            ".so"
        };
        let std_lib = std::fs::read_dir(&libdir)
            .ok()?
            .flatten()
            .find_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                (name.starts_with("libstd-") && name.ends_with(extension)).then(|| entry.path())
            })?;
        let on_path = |tool: &str| !cfg!(target_os = "macos") && which::which(tool).is_ok();
        let mold = on_path("mold");
        let lld = !mold && on_path("lld");
        Some(SessionCargo {
            mold,
            rustflags: Self::rustflags(lld),
            target,
            core_extern: format!("core={}", std_lib.display()),
            compiler,
        })
    }

    fn rustflags(lld: bool) -> String {
        let mut flags = vec!["-Cprefer-dynamic".to_owned()];
        if lld {
            flags.push("-Clink-arg=-fuse-ld=lld".to_owned());
        }
        flags.join(" ")
    }

    /// `cargo build` of the crate in `crate_dir`, as evcxr starts it.
    pub fn build_command(&self, crate_dir: &Path) -> Command {
        let mut command = if self.mold {
            let mut command = Command::new("mold");
            command.args(["-run", "cargo"]);
            command
        } else {
            Command::new("cargo")
        };
        command
            .arg("build")
            .current_dir(crate_dir)
            .env("CARGO_TARGET_DIR", "target")
            .env("CARGO_BUILD_BUILD_DIR", "target")
            .env("RUSTFLAGS", &self.rustflags)
            .env(CORE_EXTERN_ENV, &self.core_extern)
            .args(["--target", &self.target, "--message-format=json"]);
        command
    }

    /// Everything above in one line (a digest names what was built with it).
    pub fn describe(&self) -> String {
        format!(
            "mold={} rustflags={} target={} {}",
            self.mold, self.rustflags, self.target, self.core_extern
        )
    }
}

/// Where evcxr puts its build directory when set (`toml_parse.rs`).
pub const TMPDIR_ENV: &str = "EVCXR_TMPDIR";

/// evcxr's default `:fmt`; `:fmt` with no argument sets it back (so the
/// format cannot be read without being reset).
pub const DEFAULT_FORMAT: &str = "{:?}";

/// evcxr's answer to `:types` (which toggles) when it turned types on.
pub const TYPES_ON_ANSWER: &str = "Types: true";

/// Whether evcxr reads `line` as one of its `:commands` (`code_block.rs`,
/// `COMMAND_RE` = `^ *(:[^ ]*)`): spaces, not tabs, may come before the colon.
pub fn is_command_line(line: &str) -> bool {
    line.trim_start_matches(' ').starts_with(':')
}

/// evcxr's command that empties the session (crates, items, variables and
/// ferrolab's prelude with them).
pub const CLEAR_COMMAND: &str = ":clear";

/// Whether `code` has a `:clear` line (the whole line, as evcxr reads it).
pub fn clears_session(code: &str) -> bool {
    code.lines().any(|line| line.trim() == CLEAR_COMMAND)
}

/// Tells evcxr's rust-analyzer to leave out crates that the kernel adds to
/// the session for its own generated code (the checkpoint runtime), with
/// whatever only they depend on: adding them then costs no analysis (≈ 0.7 s
/// of a first `:dep` cell, and ≈ 45 MiB). A cell may still name them (the
/// compiler sees them); completion does not offer them.
/// `EvalContext::set_analysis_hidden_deps` comes from ferrolab's patch to the
/// vendored evcxr (`vendor/README.md`).
pub fn hide_from_analysis(context: &mut evcxr::EvalContext, crates: &[String]) {
    context.set_analysis_hidden_deps(crates.to_vec());
}

/// The `Cargo.lock` of the session's last build: evcxr writes its crate (with
/// its lock file) a few directories below `EVCXR_TMPDIR`; `target` is skipped.
pub fn session_cargo_lock() -> Option<PathBuf> {
    find_cargo_lock(Path::new(&std::env::var_os(TMPDIR_ENV)?))
}

fn find_cargo_lock(root: &Path) -> Option<PathBuf> {
    let mut pending = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let candidate = dir.join("Cargo.lock");
        if candidate.is_file() {
            return Some(candidate);
        }
        if depth < 3 {
            for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.file_name() != "target" {
                    pending.push((entry.path(), depth + 1));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source directory of the dependency `name` exactly as this test
    /// binary was built with it: rustc's dep-info file for the crate
    /// (`<crate>-<hash>.d`, beside this executable in cargo's `deps`) lists
    /// every source file it read. No registry, index or network is needed.
    fn crate_dir(name: &str, version: &str) -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary's path");
        let deps = exe.parent().expect("the deps directory");
        let stem = format!("{}-", name.replace('-', "_"));
        let lib = format!(
            "{}src{}lib.rs",
            std::path::MAIN_SEPARATOR,
            std::path::MAIN_SEPARATOR
        );
        let mut found = Vec::new();
        for entry in std::fs::read_dir(deps).expect("deps is readable").flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !(file_name.starts_with(&stem) && file_name.ends_with(".d")) {
                continue;
            }
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for path in info.split_whitespace().map(|p| p.trim_end_matches(':')) {
                let Some(dir) = path.strip_suffix(lib.as_str()).map(PathBuf::from) else {
                    continue;
                };
                let dir_name = dir.file_name().unwrap_or_default().to_string_lossy();
                if dir_name
                    .strip_prefix(name)
                    .is_some_and(|v| v.starts_with('-'))
                {
                    found.push(dir);
                }
            }
        }
        // Another version: re-check every assumption in this module.
        let pinned = format!("{name}-{version}");
        found
            .iter()
            .find(|dir| dir.file_name().is_some_and(|n| n == pinned.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("{pinned} is not what this binary was built with: {found:?}"))
    }

    fn crate_file(name: &str, version: &str, file: &str) -> String {
        let path = crate_dir(name, version).join("src").join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn evcxr_file(file: &str) -> String {
        crate_file("evcxr", "0.22.0", file)
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_runtime_is_marked_by_its_environment_variable() {
        assert!(evcxr_file("runtime.rs").contains(&format!(
            "EVCXR_IS_RUNTIME_VAR: &str = \"{IS_RUNTIME_ENV}\""
        )));
        assert!(evcxr_file("child_process.rs").contains(".env(runtime::EVCXR_IS_RUNTIME_VAR"));
    }

    #[test]
    fn a_run_ends_with_the_completion_line() {
        let runtime = evcxr_file("runtime.rs");
        let marker = text(EXECUTION_COMPLETE).trim_end();
        assert!(runtime.contains(&format!("EVCXR_EXECUTION_COMPLETE: &str = \"{marker}\"")));
        // println!: the marker is a line of its own.
        assert!(runtime.contains("println!(\"{EVCXR_EXECUTION_COMPLETE}\")"));
    }

    #[test]
    fn a_run_starts_with_load_and_run() {
        let command = text(LOAD_AND_RUN);
        assert!(evcxr_file("eval_context.rs").contains(&format!("\"{command}{{}} {{}}\"")));
        assert!(evcxr_file("runtime.rs").contains(&format!("Regex::new(\"{command}([^ ]+)")));
    }

    #[test]
    fn protocol_lines_start_with_the_prefix() {
        let eval = evcxr_file("eval_context.rs");
        for line in [BEGIN_CONTENT, END_CONTENT, PANIC_NOTIFICATION] {
            assert!(line.starts_with(PROTOCOL_PREFIX));
            assert!(eval.contains(text(line)), "{}", text(line));
        }
        assert!(eval.contains("Regex::new(\"EVCXR_BEGIN_CONTENT ([^ ]+)\")"));
        assert!(eval.contains("if line == \"EVCXR_END_CONTENT\""));
        assert!(text(EXECUTION_COMPLETE).starts_with(text(PROTOCOL_PREFIX)));
        assert!(INPUT_REQUEST.starts_with(PROTOCOL_PREFIX));
    }

    #[test]
    fn a_question_mark_error_prints_its_own_line() {
        let marker = text(USER_ERROR_OCCURRED).trim_end();
        assert!(marker.as_bytes().starts_with(PROTOCOL_PREFIX));
        assert!(
            evcxr_file("evcxr_internal_runtime.rs")
                .contains(&format!("USER_ERROR_OCCURRED: &str = \"{marker}\""))
        );
        // println!: the marker is a line of its own, after the error went to stderr.
        let eval = evcxr_file("eval_context.rs");
        assert!(
            eval.contains("\"println!(\\\"{}\\\", evcxr_internal_runtime::USER_ERROR_OCCURRED);\"")
        );
        assert!(eval.contains("eprintln!(\"{}\", error);"));
    }

    #[test]
    fn input_requests_use_evcxr_input_markers() {
        let input = crate_file("evcxr_input", "1.0.0", "lib.rs");
        let request = text(INPUT_REQUEST);
        assert!(input.contains(&format!("GET_CMD: &str = \"{request}\"")));
        let password = text(INPUT_REQUEST_PASSWORD);
        assert!(input.contains(&format!("GET_CMD_PASSWORD: &str = \"{password}\"")));
        // evcxr reads the request from the runtime's stdout.
        assert!(evcxr_file("eval_context.rs").contains("evcxr_input::GET_CMD"));
    }

    #[test]
    fn the_generated_variable_store_name() {
        let eval = evcxr_file("eval_context.rs");
        let name = VARIABLE_STORE.trim_matches('`');
        assert!(eval.contains(&format!("fn {name}<T: 'static>")));
        assert!(evcxr_file("errors.rs").contains(&format!("message.replace(\"{VARIABLE_STORE}\"")));
    }

    #[test]
    fn the_session_crate_and_its_build_directory() {
        let module = evcxr_file("module.rs");
        assert!(module.contains(&format!("CRATE_NAME: &str = \"{SESSION_CRATE}\"")));
        assert!(module.contains(&format!("crate-type = [\"{SESSION_CRATE_TYPE}\"]")));
        assert!(module.contains(&format!("\n{SESSION_PROFILE_LTO}\n")));
        assert!(evcxr_file("toml_parse.rs").contains(&format!("std::env::var(\"{TMPDIR_ENV}\")")));
    }

    #[test]
    fn the_session_manifest_and_cargo_command_are_evcxrs() {
        let module = evcxr_file("module.rs");
        // Every line of the profile, with `opt-level = {}` filled by the default.
        for line in SESSION_PROFILE.lines() {
            let line = line.replace("opt-level = 2", "opt-level = {}");
            assert!(module.contains(&format!("\n{line}\n")), "{line}");
        }
        let eval = evcxr_file("eval_context.rs");
        assert!(eval.contains("opt_level: \"2\".to_owned(),"));
        let manifest = session_manifest("x = \"1\"");
        assert!(manifest.contains("[profile.dev]\nopt-level = 2\n"));
        assert!(manifest.ends_with("[dependencies]\nx = \"1\"\n"));
        assert!(
            module.contains("[package]\nname = \"{}\"\nversion = \"1.0.0\"\nedition = \"2024\"")
        );
        assert!(module.contains("path = \"src/lib.rs\""));
        assert!(module.contains(&format!("CORE_EXTERN_ENV: &str = \"{CORE_EXTERN_ENV}\"")));
        // cargo_command: the flags, variables and arguments build_command sets.
        for needle in [
            "let mut rustflags = vec![\"-Cprefer-dynamic\".to_owned()];",
            "rustflags.push(format!(\"-Clink-arg=-fuse-ld={}\", self.linker));",
            ".env(\"CARGO_TARGET_DIR\", \"target\")",
            ".env(\"CARGO_BUILD_BUILD_DIR\", \"target\")",
            ".env(\"RUSTFLAGS\", rustflags.join(\" \"))",
            ".env(crate::module::CORE_EXTERN_ENV, &self.core_extern);",
            ".arg(\"--target\")",
            ".arg(\"--message-format=json\");",
            "command.arg(\"-run\").arg(&self.cargo_path);",
            "which::which(\"mold\").is_ok()",
            "which::which(\"lld\").is_ok()",
            "if let Some(host) = line.strip_prefix(\"host: \") {",
            "let mut result = OsString::from(\"core=\");",
        ] {
            assert!(eval.contains(needle), "{needle}");
        }
        assert_eq!(SessionCargo::rustflags(false), "-Cprefer-dynamic");
        assert_eq!(
            SessionCargo::rustflags(true),
            "-Cprefer-dynamic -Clink-arg=-fuse-ld=lld"
        );
        let here = SessionCargo::of_this_machine().expect("rustc works here");
        assert!(here.core_extern.starts_with("core=/"), "{here:?}");
        assert!(Path::new(here.core_extern.trim_start_matches("core=")).is_file());
    }

    #[test]
    fn cargo_lock_is_found_below_the_build_directory_but_not_in_target() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find_cargo_lock(root.path()), None);
        let target = root.path().join("target/x");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("Cargo.lock"), "").unwrap();
        assert_eq!(find_cargo_lock(root.path()), None);
        let crate_dir = root.path().join("a/b");
        std::fs::create_dir_all(&crate_dir).unwrap();
        std::fs::write(crate_dir.join("Cargo.lock"), "").unwrap();
        assert_eq!(
            find_cargo_lock(root.path()),
            Some(crate_dir.join("Cargo.lock"))
        );
    }

    #[test]
    fn command_lines_follow_evcxr_rule() {
        assert!(evcxr_file("code_block.rs").contains(r#"Regex::new("^ *(:[^ ]*)( +(.*))?$")"#));
        assert!(is_command_line(":dep x"));
        assert!(is_command_line("   :fmt {:?}"));
        assert!(!is_command_line("\t:fmt"));
        assert!(!is_command_line("let a = 1; // :x"));
    }

    #[test]
    fn clear_is_an_evcxr_command() {
        assert!(evcxr_file("command_context.rs").contains(&format!("\"{CLEAR_COMMAND}\",")));
        assert!(clears_session("let a = 1;\n  :clear  \n"));
        assert!(!clears_session(":clear_cache\nlet clear = 1;"));
    }

    #[test]
    fn display_setting_answers() {
        let commands = evcxr_file("command_context.rs");
        assert!(commands.contains(&format!(
            "let new_format = if let Some(f) = args {{ f }} else {{ \"{DEFAULT_FORMAT}\" }};"
        )));
        let default = format!("output_format: \"{DEFAULT_FORMAT}\".to_owned()");
        assert!(evcxr_file("eval_context.rs").contains(&default));
        let types_prefix = TYPES_ON_ANSWER.split(':').next().unwrap();
        assert!(commands.contains(&format!(
            "format!(\"{types_prefix}: {{}}\", state.display_types())"
        )));
    }

    #[test]
    fn final_values_are_probed_with_evcxr_display_then_debug() {
        // What `one_compile` replaces, and what its prelude trait copies.
        let eval = evcxr_file("eval_context.rs");
        assert!(eval.contains(".generated(\").evcxr_display();\")"));
        assert!(eval.contains("output.write_all(b\"EVCXR_BEGIN_CONTENT text/plain\\n\")?;"));
        assert!(eval.contains("output.write_all(b\"\\nEVCXR_END_CONTENT\\n\")?;"));
        let splitter = evcxr_file("statement_splitter.rs");
        assert!(splitter.contains("let prelude = \"fn f(){\";"));
    }

    #[test]
    fn the_session_prelude_speaks_the_same_markers() {
        let prelude = super::super::prelude::ITEMS;
        for marker in [INPUT_REQUEST, INPUT_REQUEST_PASSWORD] {
            assert!(prelude.contains(&format!("\"{}\"", text(marker))));
        }
        assert!(prelude.contains(&format!("b\"{} text/plain\\n\"", text(BEGIN_CONTENT))));
        assert!(prelude.contains(&format!("b\"\\n{}\\n\"", text(END_CONTENT))));
    }
}
