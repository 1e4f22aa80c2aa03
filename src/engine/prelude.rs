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
