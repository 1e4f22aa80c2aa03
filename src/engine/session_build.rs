//! How the session crate (the one crate evcxr compiles for every cell) is
//! compiled beyond evcxr's own profile.
//!
//! evcxr's profile (`opt-level = 2`, `codegen-units = 16`, `lto = false`,
//! incremental) leaves rustc's *local ThinLTO* on: after the cell's code
//! generation, every codegen unit is optimised again against the others, and
//! on a warm cell that pass is about 15% of the whole cell (cargo, rustc,
//! link). ferrolab compiles the session crate with `-C lto=off` instead: each
//! function is still optimised at the session's `:opt` level, small functions
//! are still inlined where they are called (rustc copies them into each
//! codegen unit), and only the inlining of larger functions across codegen
//! units goes. The user's dependencies keep their profile untouched (their
//! builds, and the build cache's entries, are the same as before).
//!
//! Invariants: only the session crate's own compile changes (recognised by
//! evcxr's crate name and crate type, see `evcxr_contract`); a command line
//! that already chooses an LTO mode is left as it is; `FERROLAB_CELL_THINLTO=1`
//! keeps evcxr's way (a compute loop written in cells measured 5–10% faster
//! with ThinLTO, for ≈ 15% more per cell build). Applied by the rustc
//! wrapper the build cache installs (`main.rs`), so with the build cache off
//! (`FERROLAB_BUILD_CACHE_MB=0`) cells build as evcxr builds them.

use super::evcxr_contract::{SESSION_CRATE, SESSION_CRATE_TYPE};
use std::ffi::OsString;

/// What ferrolab adds to the session crate's rustc command line.
pub const EXTRA_RUSTC_ARGS: &[&str] = &["-C", "lto=off"];

/// `FERROLAB_CELL_THINLTO=1` keeps evcxr's local ThinLTO for cells (a long
/// compute loop written in cells ran 5–10% faster with it; each cell builds
/// ≈ 15% slower). Read by the wrapper, so `%env` changes the next build.
pub const THINLTO_ENV: &str = "FERROLAB_CELL_THINLTO";

/// Whether `args` (rustc's arguments, the compiler first) compile the session
/// crate itself.
pub fn is_session_compile(args: &[OsString]) -> bool {
    let has = |flag: &str, value: &str| {
        args.windows(2)
            .any(|pair| pair[0] == flag && pair[1] == value)
    };
    has("--crate-name", SESSION_CRATE) && has("--crate-type", SESSION_CRATE_TYPE)
}

/// `args` with [`EXTRA_RUSTC_ARGS`] added when they compile the session crate
/// and choose no LTO mode of their own, unless [`THINLTO_ENV`] is on.
pub fn adjust(args: Vec<OsString>) -> Vec<OsString> {
    adjust_for(args, std::env::var(THINLTO_ENV).ok().as_deref())
}

/// [`adjust`] with the switch's value given.
fn adjust_for(args: Vec<OsString>, thinlto: Option<&str>) -> Vec<OsString> {
    let keep_thinlto =
        thinlto.is_some_and(|value| !matches!(value.trim(), "" | "0" | "off" | "false" | "no"));
    if keep_thinlto {
        return args;
    }
    adjusted(args)
}

fn adjusted(mut args: Vec<OsString>) -> Vec<OsString> {
    let chooses_lto = args.iter().any(|arg| {
        let arg = arg.to_string_lossy();
        arg.starts_with("lto") || arg.starts_with("-Clto")
    });
    if is_session_compile(&args) && !chooses_lto {
        args.extend(EXTRA_RUSTC_ARGS.iter().map(OsString::from));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<OsString> {
        text.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_session_crate_compiles_without_local_thinlto() {
        let session = args(
            "/usr/bin/rustc --crate-name ctx --edition=2024 src/lib.rs --crate-type cdylib -C opt-level=2 -C codegen-units=16",
        );
        let adjusted = adjusted(session.clone());
        assert_eq!(adjusted[..session.len()], session[..]);
        assert_eq!(adjusted[session.len()..], args("-C lto=off")[..]);
    }

    #[test]
    fn the_switch_keeps_evcxrs_thinlto() {
        let session = args("rustc --crate-name ctx --crate-type cdylib -C opt-level=2");
        assert_eq!(adjust_for(session.clone(), Some("1")), session);
        for off in [None, Some("0"), Some(""), Some("off")] {
            assert_ne!(adjust_for(session.clone(), off), session, "{off:?}");
        }
    }

    #[test]
    fn dependencies_and_explicit_lto_choices_are_left_alone() {
        for untouched in [
            "rustc --crate-name regex --crate-type lib -C opt-level=2",
            "rustc --crate-name ctx --crate-type lib",
            "rustc --crate-name ctx --crate-type cdylib -C lto=fat",
            "rustc --crate-name ctx --crate-type cdylib -Clto",
            "rustc --crate-name build_script_build --crate-type bin",
        ] {
            assert_eq!(adjusted(args(untouched)), args(untouched), "{untouched}");
        }
    }
}
