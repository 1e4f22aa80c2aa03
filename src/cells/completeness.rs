//! Is a cell complete, or does it need another line? (`is_complete_request`)
//!
//! Open brackets or an unterminated string/comment mean `incomplete` (indent:
//! four spaces per open bracket); a closer that matches nothing, or the wrong
//! opener, is `invalid`. Magic, shell, help and evcxr command lines are whole
//! lines on their own (see [`lexer`](super::lexer)), and a `%%` cell magic
//! owns the cell, so it is complete as soon as it is sent.

use super::lexer::{End, scan};
use crate::kernel::Completeness;

pub fn check(code: &str) -> Completeness {
    if code.trim_start().starts_with("%%") {
        return Completeness::Complete;
    }
    match scan(code).1 {
        End::Balanced => Completeness::Complete,
        End::Open(depth) => Completeness::Incomplete {
            indent: "    ".repeat(depth),
        },
        End::Unterminated => Completeness::Incomplete {
            indent: String::new(),
        },
        End::Mismatched => Completeness::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incomplete(indent: &str) -> Completeness {
        Completeness::Incomplete {
            indent: indent.to_owned(),
        }
    }

    #[test]
    fn complete_code() {
        for code in [
            "1",
            "let x = 1;",
            "fn f() {}",
            "fn f() { 1 }\nf()",
            "",
            "let s = \"a { b\";",
            "let c = '{';",
            "fn f<'a>(x: &'a str) -> &'a str { x }",
            "let r = r#\"raw \" { \"#;",
            "// a comment with (\nlet x = 1;",
            "/* nested /* block */ comment */ 1",
            "let b = b'}';",
            "let e = '\\'';",
            "let bytes = br\"{{\";",
            "%%bash\nif [ 1 ]; then\n",
            "%cd (\nlet x = 1;",
            ":dep serde = { version = \"1\" }",
            "std::mem::drop(1)",
            "'outer: loop { break 'outer; }",
        ] {
            assert_eq!(check(code), Completeness::Complete, "{code:?}");
        }
    }

    #[test]
    fn incomplete_code() {
        assert_eq!(check("fn f() {"), incomplete("    "));
        assert_eq!(check("fn f() {\n    if x {"), incomplete("        "));
        assert_eq!(check("let v = vec![1,\n2,"), incomplete("    "));
        assert_eq!(check("\"abc"), incomplete(""));
        assert_eq!(check("let s = r#\"open"), incomplete(""));
        assert_eq!(check("/* unterminated"), incomplete(""));
        assert_eq!(check("/* a /* b */"), incomplete(""));
        assert_eq!(check("call(\"(\""), incomplete("    "));
    }

    #[test]
    fn invalid_code() {
        assert_eq!(check("}"), Completeness::Invalid);
        assert_eq!(check("fn f() { )"), Completeness::Invalid);
        assert_eq!(check("let x = [1, 2);"), Completeness::Invalid);
        assert_eq!(check("1)"), Completeness::Invalid);
    }

    #[test]
    fn identifiers_ending_in_r_or_b_are_not_string_prefixes() {
        assert_eq!(check("let bar = 1; let r = bar;"), Completeness::Complete);
        assert_eq!(check("let br = 1; br"), Completeness::Complete);
    }

    #[test]
    fn magic_lines_inside_rust_blocks_are_rust() {
        // Inside a block, a line starting with ! is Rust (e.g. a negation).
        assert_eq!(check("if x {\n!y\n"), incomplete("    "));
    }
}
