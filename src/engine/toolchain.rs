//! Finding the Rust toolchain the cells compile with.
//!
//! Jupyter is often started from a desktop or a service whose PATH lacks
//! `~/.cargo/bin`; evcxr needs `cargo` and `rustc` on PATH. The kernel adds the
//! rustup bin directory when cargo is not found, before any thread starts.

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

/// Explains what is missing, or `None` if cargo and rustc can be run.
pub fn missing_toolchain() -> Option<String> {
    for tool in ["cargo", "rustc"] {
        if which::which(tool).is_err() {
            return Some(format!(
                "`{tool}` was not found on PATH, so Rust cells cannot be compiled. Install Rust with \
                 rustup (https://rustup.rs), make sure ~/.cargo/bin is on PATH, then restart the kernel."
            ));
        }
    }
    None
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
        .ok()?;
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
