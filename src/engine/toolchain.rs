//! Finding the Rust toolchain the cells compile with.
//!
//! Jupyter is often started from a desktop or a service whose PATH lacks
//! `~/.cargo/bin`; evcxr needs `cargo` and `rustc` on PATH. The kernel adds the
//! rustup bin directory when cargo is not found, before any thread starts.
//!
//! When the toolchain is broken (no cargo, a rustup with no default toolchain
//! for this HOME, no C linker, no standard library), the first cell's error
//! names what is missing and the command that adds it.

use std::path::PathBuf;
use std::process::Command;

/// Where rustup puts cargo: `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn rustup_bin_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// Appends the rustup bin directory to PATH if cargo is not on PATH.
/// Must run before the process starts threads.
pub fn ensure_cargo_on_path() {
    if which::which("cargo").is_ok() {
        return;
    }
    let Some(dir) = rustup_bin_dir().filter(|dir| dir.join("cargo").is_file()) else {
        return;
    };
    let mut paths: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    paths.push(dir);
    if let Ok(joined) = std::env::join_paths(paths) {
        // SAFETY: called from `main` before any other thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

/// How to install Rust when there is none.
const INSTALL_RUST: &str =
    "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y";
/// How to get a C toolchain (rustc links through `cc`).
const INSTALL_LINKER: &str = "sudo apt install build-essential (Debian/Ubuntu; \
     Fedora: sudo dnf install gcc; macOS: xcode-select --install)";

/// Checks that cargo and rustc can run; if not, says what is missing and the
/// command that fixes it (shown as the first cell's error).
pub fn missing_toolchain() -> Option<String> {
    for tool in ["cargo", "rustc"] {
        if which::which(tool).is_err() {
            let path = std::env::var("PATH").unwrap_or_default();
            return Some(format!(
                "`{tool}` was not found on PATH ({path}), so Rust cells cannot be compiled.\n\
                 Fix: install Rust with rustup: {INSTALL_RUST}\n\
                 If Rust is installed, start Jupyter with ~/.cargo/bin on its PATH (or set \
                 CARGO_HOME), then restart the kernel."
            ));
        }
    }
    for (tool, args) in [("cargo", ["-V"]), ("rustc", ["-V"])] {
        let problem = match Command::new(tool).args(args).output() {
            Ok(output) if output.status.success() => continue,
            Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
            Err(error) => error.to_string(),
        };
        return Some(explain_broken_tool(tool, &problem));
    }
    None
}

/// Turns the error of a `cargo -V`/`rustc -V` that failed into what to do.
fn explain_broken_tool(tool: &str, stderr: &str) -> String {
    // rustup's message, without the backtrace RUST_BACKTRACE adds.
    let message: Vec<&str> = stderr
        .lines()
        .take_while(|line| !line.starts_with("Stack backtrace"))
        .filter(|line| !line.trim().is_empty())
        .take(6)
        .collect();
    let message = message.join("\n");
    let fix = if message.contains("no default is configured") {
        "rustup has no default toolchain for this user (check HOME and RUSTUP_HOME): \
         run `rustup default stable`, then restart the kernel."
            .to_owned()
    } else if let Some(name) = missing_toolchain_name(&message) {
        format!(
            "install the toolchain it names: `rustup toolchain install {name}`, then restart the kernel."
        )
    } else {
        format!(
            "reinstall Rust ({INSTALL_RUST}) or repair it (`rustup update`), then restart the kernel."
        )
    };
    format!(
        "`{tool}` is on PATH but does not run, so Rust cells cannot be compiled:\n{message}\nFix: {fix}"
    )
}

/// `toolchain 'NAME' is not installed` → `NAME`.
fn missing_toolchain_name(message: &str) -> Option<&str> {
    let start = message.find("toolchain '")? + "toolchain '".len();
    let rest = &message[start..];
    let name = &rest[..rest.find('\'')?];
    rest[name.len()..]
        .starts_with("' is not installed")
        .then_some(name)
}

/// Explains why evcxr could not start, naming the piece of the toolchain
/// that is missing when it can tell (a C linker, the standard library,
/// rust-src), with the command that adds it; `error` is evcxr's own message.
pub fn explain_start_failure(error: &str) -> String {
    let mut text = format!("evcxr could not start: {}", error.trim());
    if which::which("cc").is_err() || error.contains("linker `cc` not found") {
        text.push_str(&format!(
            "\nMissing: a C linker (`cc`), which rustc uses to link every cell.\nFix: {INSTALL_LINKER}, then restart the kernel."
        ));
    }
    match target_libdir() {
        Some(dir) if has_std_dylib(&dir) => {}
        Some(dir) => text.push_str(&format!(
            "\nMissing: the standard library's shared object (libstd-*.so) in {}.\nFix: `rustup component add rust-std`, then restart the kernel.",
            dir.display()
        )),
        None => text.push_str(
            "\nMissing: `rustc --print target-libdir` gave no answer.\nFix: `rustup default stable` (or reinstall Rust), then restart the kernel.",
        ),
    }
    if !has_rust_src() {
        text.push_str(
            "\nAlso missing: the rust-src component (completion and hover of std items).\nFix: `rustup component add rust-src`.",
        );
    }
    text
}

fn has_std_dylib(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".so")
        })
    })
}

/// `rustc --version`'s version number, e.g. `1.95.0`.
pub fn rustc_version() -> Option<String> {
    let output = Command::new("rustc").arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// Where the toolchain keeps the standard library's shared objects
/// (`rustc --print target-libdir`).
pub fn target_libdir() -> Option<PathBuf> {
    let output = Command::new("rustc")
        .args(["--print", "target-libdir"])
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let dir = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// True when the `rust-src` component (needed for completion and hover of std
/// items) is installed for the active toolchain.
pub fn has_rust_src() -> bool {
    let Ok(output) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    PathBuf::from(sysroot)
        .join("lib/rustlib/src/rust/library")
        .is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustup_without_a_default_toolchain_gets_the_command_that_fixes_it() {
        let stderr = "error: rustup could not choose a version of cargo to run, because one wasn't \
                      specified explicitly, and no default is configured.\nhelp: run 'rustup default \
                      stable' to download the latest stable release of Rust.\n\nStack backtrace:\n   0: anyhow";
        let text = explain_broken_tool("cargo", stderr);
        assert!(
            text.contains("`cargo` is on PATH but does not run"),
            "{text}"
        );
        assert!(text.contains("run `rustup default stable`"), "{text}");
        assert!(!text.contains("Stack backtrace"), "{text}");
    }

    #[test]
    fn a_missing_named_toolchain_is_named() {
        let stderr =
            "error: toolchain 'nightly-2024-01-01-x86_64-unknown-linux-gnu' is not installed";
        let text = explain_broken_tool("rustc", stderr);
        assert!(
            text.contains("rustup toolchain install nightly-2024-01-01-x86_64-unknown-linux-gnu"),
            "{text}"
        );
        assert_eq!(missing_toolchain_name("toolchain 'x"), None);
    }
}
