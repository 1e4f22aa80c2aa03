//! Rust source that ferrolab evaluates in every session before the first cell.
//!
//! [`ITEMS`] defines the `ferrolab` module users call for rich output
//! (`ferrolab::display_html(..)`, `ferrolab::display("image/svg+xml", ..)`,
//! `ferrolab::update_display(..)`, `ferrolab::clear_output()`) and input
//! (`ferrolab::input(..)`, `ferrolab::password(..)`); its source is
//! `prelude/ferrolab.rs`, a real Rust file that ferrolab's own tests compile
//! (so rustc and clippy check it). [`SETUP`] runs once per runtime process: a
//! panic hook that reports the panic message to the kernel, and a small thread
//! that flushes Rust's line-buffered stdout when the relay asks, so `print!`
//! without a newline shows promptly. Both talk to the relay through envelopes
//! (see `relay::parser`).

/// Item definitions; evcxr keeps them for every later cell.
pub const ITEMS: &str = concat!(
    "#[allow(dead_code, unused_macros, unused_imports)]\nmod ferrolab {\n",
    include_str!("prelude/ferrolab.rs"),
    "}\n"
);

/// Runs once per runtime process (after start, a crash, `:restart` or `:clear`).
pub const SETUP: &str = "ferrolab::__setup();";

/// Runs once after the prelude if no cell is waiting yet (a person reading the
/// notebook before pressing Run). evcxr asks rust-analyzer for the type of every new
/// top-level variable, and the first such question makes rust-analyzer expand
/// and resolve the whole standard library (seconds on a small VM): one
/// variable here pays that before the first cell instead of in it. It is
/// moved at once, so evcxr does not keep it.
pub const WARM_UP: &str = "let __ferrolab_warm_up = { let n = 40 + 2; let v = vec![n]; \
     let s = format!(\"{n}\"); vec![(v.len() + s.len()) as f64 * 0.5] }; drop(__ferrolab_warm_up);";

/// The session's `ferrolab` module, compiled as part of the tests.
#[cfg(test)]
#[allow(dead_code, unused_macros, unused_imports)]
mod ferrolab;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_wrap_the_module_source() {
        assert!(ITEMS.starts_with("#[allow("));
        assert!(ITEMS.contains("\nmod ferrolab {\n//! The `ferrolab` module"));
        assert!(ITEMS.trim_end().ends_with('}'));
        assert!(ITEMS.contains("pub fn __setup()"));
    }
}
