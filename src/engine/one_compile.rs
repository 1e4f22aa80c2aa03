//! One compile per expression cell: shows a cell's final value without
//! evcxr's display probing.
//!
//! evcxr compiles a cell that ends in an expression twice: first with
//! `(EXPR).evcxr_display();`, which fails for every type without that method,
//! then again with `{:?}`. [`rewrite`] turns the final expression into a
//! statement that shows the value in one compile through the prelude's
//! `ferrolab::__ShowValue` trait: a type's own `evcxr_display` wins method
//! lookup (inherent methods come before trait methods), anything else `Debug`
//! is sent as evcxr's fallback sends it. evcxr then sees no final expression.
//!
//! Invariants:
//! - the rewrite only replaces the final expression's own text, on its own
//!   lines: every other statement, and every line number, is unchanged;
//! - the value is borrowed as evcxr borrows it (`(EXPR).evcxr_display()`
//!   autorefs), and its temporaries live until it was shown (`match &(EXPR)`);
//!   a type whose `evcxr_display` takes `self` by value does not compile so
//!   and goes through evcxr's own path;
//! - the value's output follows `__value_follows()`, which tells the relay
//!   that content blocks printed before it were the cell's own displays
//!   (`relay::live_blocks`);
//! - a cell with evcxr `:commands` or `!` lines, or one that does not parse,
//!   is left alone; so is a cell when the session's display settings differ
//!   from evcxr's defaults (`:fmt`, `:types`): see [`DisplaySettings`];
//! - the one exception: leading `:dep` lines stay as they are and the Rust
//!   after them is rewritten, so the cell that brings a crate in builds once,
//!   not twice (evcxr adds a dependency it already has as a no-op, so running
//!   such a cell a second time adds nothing twice);
//! - the engine runs the rewritten cell first and, if it does not compile, the
//!   cell unchanged (a compile error means none of it ran), so errors and
//!   values the rewrite cannot show come out exactly as evcxr makes them.
//!
//! Known difference: a smart pointer to a type with its own `evcxr_display`
//! (`Rc<Plot>`) shows with `Debug` where evcxr would find the method through
//! `Deref`.

use ra_ap_syntax::ast::{self, AstNode};
use ra_ap_syntax::{Edition, SourceFile};

/// Environment switch: `FERROLAB_ONE_COMPILE=0` leaves every cell to evcxr.
pub const SWITCH_ENV: &str = "FERROLAB_ONE_COMPILE";

const OPEN: &str = "{ #[allow(unused_imports)] use crate::ferrolab::__ShowValue as _; match &(";
const CLOSE: &str = ") { __ferrolab_value => { crate::ferrolab::__value_follows(); __ferrolab_value.evcxr_display(); } } };";

/// Whether the rewrite is switched on for this process.
pub fn enabled_by_env() -> bool {
    std::env::var(SWITCH_ENV).map_or(true, |value| value.trim() != "0")
}

/// The session's display settings, as far as the rewrite cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplaySettings {
    /// `:fmt` is evcxr's default `{:?}`.
    pub default_format: bool,
    /// `:types` is off.
    pub types_off: bool,
}

impl DisplaySettings {
    /// `default_format` as tracked by [`format_after`]; `toggled_types_answer`
    /// is evcxr's answer to a `:types` toggle (it reports the state after it,
    /// so `true` means it was off; the caller toggles it back). evcxr has no
    /// way to read `:fmt` without setting it.
    pub fn new(default_format: bool, toggled_types_answer: &str) -> Self {
        DisplaySettings {
            default_format,
            types_off: toggled_types_answer.trim() == super::evcxr_contract::TYPES_ON_ANSWER,
        }
    }

    /// Whether the rewrite shows values as evcxr would with these settings.
    pub fn rewrite_matches_evcxr(self) -> bool {
        self.default_format && self.types_off
    }
}

/// Whether `:fmt` is evcxr's default after `code` ran, given whether it was
/// before: `:fmt` alone or `:fmt {:?}` sets the default, any other argument
/// changes it. evcxr keeps a cell's settings only if the cell succeeded, so
/// after a failed cell any `:fmt` counts as a change (the rewrite stays off
/// until a cell sets the default again: off is always safe).
pub fn format_after(code: &str, before: bool, succeeded: bool) -> bool {
    let mut after = before;
    for line in code
        .lines()
        .filter(|line| super::evcxr_contract::is_command_line(line))
    {
        let mut words = line.trim_start().splitn(2, ' ');
        if words.next() != Some(":fmt") {
            continue;
        }
        let argument = words.next().unwrap_or("").trim();
        after =
            succeeded && (argument.is_empty() || argument == super::evcxr_contract::DEFAULT_FORMAT);
    }
    after
}

/// Whether `code` has a line evcxr reads as a command (`:dep`, `:fmt`, ...)
/// or a shell line, which the rewrite leaves to evcxr.
pub fn has_commands(code: &str) -> bool {
    code.lines()
        .any(|line| super::evcxr_contract::is_command_line(line) || line.starts_with('!'))
}

/// `code` with its final expression turned into a statement that shows the
/// value with one compile; `None` when the cell has no final expression, has
/// commands other than leading `:dep` lines, or does not parse.
pub fn rewrite(code: &str) -> Option<String> {
    let (deps, rust) = code.split_at(leading_deps_len(code)?);
    let (start, end) = final_expression(rust)?;
    let mut out = String::with_capacity(code.len() + OPEN.len() + CLOSE.len());
    out.push_str(deps);
    out.push_str(&rust[..start]);
    out.push_str(OPEN);
    out.push_str(&rust[start..end]);
    out.push_str(CLOSE);
    out.push_str(&rust[end..]);
    // The result must have no final expression left, or evcxr would probe it.
    final_expression(&out[deps.len()..])
        .is_none()
        .then_some(out)
}

/// The length of `code`'s leading `:dep` lines (and blank lines among them),
/// or `None` when the rest has a command or shell line of any kind.
fn leading_deps_len(code: &str) -> Option<usize> {
    let mut len = 0;
    for line in code.split_inclusive('\n') {
        let is_dep = line.trim_start_matches(' ').starts_with(":dep ");
        if !is_dep && !line.trim().is_empty() {
            break;
        }
        len += line.len();
    }
    (!has_commands(&code[len..])).then_some(len)
}

/// Whether evcxr would show no value for `code`: it parses, has no final
/// expression and no `:command` or `!` line (whose cells evcxr splits
/// itself). Such a cell, like a rewritten one, prints nothing evcxr takes for
/// its value, so its content blocks can be shown as they come.
pub fn shows_no_value(code: &str) -> bool {
    !has_commands(code) && parses(code) && final_expression(code).is_none()
}

fn parses(code: &str) -> bool {
    SourceFile::parse(&format!("fn f(){{{code}\n}}"), Edition::Edition2024)
        .errors()
        .is_empty()
}

/// Byte range in `code` of the final expression, found the way evcxr 0.22
/// splits a cell (`statement_splitter`): the cell is parsed as the body of a
/// function and its last statement counts when it is an expression.
fn final_expression(code: &str) -> Option<(usize, usize)> {
    const PREFIX: &str = "fn f(){";
    let parsed = SourceFile::parse(&format!("{PREFIX}{code}\n}}"), Edition::Edition2024);
    if !parsed.errors().is_empty() {
        return None;
    }
    let body = parsed
        .tree()
        .syntax()
        .children()
        .next()
        .and_then(ast::Fn::cast)?
        .body()?
        .stmt_list()?;
    let last = body.syntax().children().last()?;
    if !ast::Expr::can_cast(last.kind()) {
        return None;
    }
    let range = last.text_range();
    let start = usize::from(range.start()).checked_sub(PREFIX.len())?;
    let end = usize::from(range.end()).checked_sub(PREFIX.len())?;
    (end <= code.len() && start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_expression_becomes_a_statement_on_the_same_lines() {
        assert_eq!(
            rewrite("let a = 1;\na + 1").as_deref(),
            Some(
                "let a = 1;\n{ #[allow(unused_imports)] use crate::ferrolab::__ShowValue as _; match &(a + 1) { __ferrolab_value => { crate::ferrolab::__value_follows(); __ferrolab_value.evcxr_display(); } } };"
            )
        );
        let cell = "let v = vec![1];\nv\n    .len() // length\n";
        let rewritten = rewrite(cell).unwrap();
        assert_eq!(rewritten.lines().count(), cell.lines().count());
        assert!(rewritten.ends_with(
            "match &(v\n    .len()) { __ferrolab_value => { crate::ferrolab::__value_follows(); __ferrolab_value.evcxr_display(); } } }; // length\n"
        ));
    }

    #[test]
    fn cells_without_a_final_expression_are_left_alone() {
        assert_eq!(rewrite("let a = 1;"), None);
        assert_eq!(rewrite("fn f() {}"), None);
        assert_eq!(rewrite("println!(\"x\");"), None);
        assert_eq!(rewrite("for i in 0..2 {}\nlet b = 2;"), None);
        assert_eq!(rewrite(""), None);
        assert_eq!(rewrite("// just a comment"), None);
    }

    #[test]
    fn only_parsed_cells_without_a_value_or_commands_show_no_value() {
        assert!(shows_no_value("let a = 1;"));
        assert!(shows_no_value(
            "for i in 0..2 { println!(\"{i}\"); }\nlet b = 2;"
        ));
        assert!(shows_no_value("fn f() {}"));
        assert!(!shows_no_value("let a = 1;\na"));
        assert!(!shows_no_value(":dep itoa = \"1\"\nlet a = 1;"));
        assert!(!shows_no_value("!ls"));
        assert!(!shows_no_value("let a = ;"));
    }

    #[test]
    fn block_like_and_macro_tails_are_final_expressions_too() {
        assert!(rewrite("if true { 1 } else { 2 }").is_some());
        assert!(rewrite("vec![1, 2]").is_some());
        assert!(rewrite("for i in 0..2 {}").is_some());
    }

    #[test]
    fn leading_dep_lines_stay_and_the_rust_after_them_is_rewritten() {
        let cell = ":dep itoa = \"1\"\n\n  :dep ryu = \"1\"\nuse itoa as _;\n1 + 1";
        let rewritten = rewrite(cell).unwrap();
        assert!(
            rewritten.starts_with(":dep itoa = \"1\"\n\n  :dep ryu = \"1\"\nuse itoa as _;\n{ ")
        );
        assert!(rewritten.contains("match &(1 + 1)"));
        assert_eq!(rewritten.lines().count(), cell.lines().count());
        // Only dependencies: nothing to show.
        assert_eq!(rewrite(":dep itoa = \"1\""), None);
        assert_eq!(rewrite(":dep itoa = \"1\"\nlet a = 1;"), None);
    }

    #[test]
    fn commands_shell_lines_and_parse_errors_are_left_to_evcxr() {
        assert_eq!(rewrite(":dep itoa = \"1\"\n:opt 0\n1 + 1"), None);
        assert_eq!(rewrite(":opt 0\n:dep itoa = \"1\"\n1 + 1"), None);
        assert_eq!(rewrite(":dep itoa = \"1\"\n!ls\n1 + 1"), None);
        assert_eq!(rewrite("\t:dep itoa = \"1\"\n1 + 1"), None);
        assert_eq!(rewrite("  :fmt {:#?}\n1"), None);
        assert_eq!(rewrite("!ls\n1"), None);
        assert_eq!(rewrite("let a = ;\na"), None);
        assert_eq!(rewrite("a +"), None);
    }

    #[test]
    fn display_settings_come_from_evcxr_answers() {
        assert!(DisplaySettings::new(true, "Types: true\n").rewrite_matches_evcxr());
        assert!(!DisplaySettings::new(false, "Types: true").rewrite_matches_evcxr());
        assert!(!DisplaySettings::new(true, "Types: false").rewrite_matches_evcxr());
    }

    #[test]
    fn the_format_is_tracked_through_fmt_commands() {
        assert!(format_after("let a = 1;", true, true));
        assert!(!format_after("let a = 1;", false, true));
        assert!(!format_after(":fmt {:#?}", true, true));
        assert!(format_after(":fmt {:#?}\n:fmt", true, true));
        assert!(format_after("  :fmt {:?}", false, true));
        assert!(!format_after(":fmt {:?}\nbad code", false, false));
        assert!(!format_after(":fmtx", false, true));
    }
}
