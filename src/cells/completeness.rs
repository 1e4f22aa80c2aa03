//! Is a cell complete, or does it need another line? (`is_complete_request`)
//!
//! A small lexer tracks brackets, strings (plain, byte, C and raw), char
//! literals versus lifetimes, and nested block comments. Open delimiters or an
//! unterminated string/comment mean `incomplete` (indent: four spaces per open
//! bracket); a closer that matches nothing, or the wrong opener, is `invalid`.
//! Magic, shell, help and evcxr command lines (`%`, `!`, `?`, `:` at the top
//! level) are whole lines on their own, and a `%%` cell magic owns the cell.

use crate::kernel::Completeness;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Code,
    LineComment,
    BlockComment(u32),
    Str,
    RawStr(usize),
}

pub fn check(code: &str) -> Completeness {
    if code.trim_start().starts_with("%%") {
        return Completeness::Complete;
    }
    let chars: Vec<char> = code.chars().collect();
    let mut stack: Vec<char> = Vec::new();
    let mut mode = Mode::Code;
    let mut i = 0;
    let mut line_start = true;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match mode {
            Mode::LineComment => {
                if c == '\n' {
                    mode = Mode::Code;
                }
            }
            Mode::BlockComment(depth) => {
                if c == '*' && next == Some('/') {
                    mode = if depth == 1 {
                        Mode::Code
                    } else {
                        Mode::BlockComment(depth - 1)
                    };
                    i += 1;
                } else if c == '/' && next == Some('*') {
                    mode = Mode::BlockComment(depth + 1);
                    i += 1;
                }
            }
            Mode::Str => {
                if c == '\\' {
                    i += 1;
                } else if c == '"' {
                    mode = Mode::Code;
                }
            }
            Mode::RawStr(hashes) => {
                if c == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    mode = Mode::Code;
                    i += hashes;
                }
            }
            Mode::Code => {
                if line_start && stack.is_empty() && starts_special_line(&chars[i..]) {
                    // Skip the whole magic / shell / command line.
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    continue;
                }
                match c {
                    '/' if next == Some('/') => mode = Mode::LineComment,
                    '/' if next == Some('*') => {
                        mode = Mode::BlockComment(1);
                        i += 1;
                    }
                    '"' => mode = Mode::Str,
                    'r' | 'b' | 'c' if !prev_is_ident(&chars, i) => {
                        if let Some((skip, hashes)) = raw_string_start(&chars[i..]) {
                            mode = Mode::RawStr(hashes);
                            i += skip;
                        } else if (c == 'b' || c == 'c') && next == Some('"') {
                            mode = Mode::Str;
                            i += 1;
                        } else if c == 'b' && next == Some('\'') {
                            i += 1 + char_literal_length(&chars[i + 1..]).unwrap_or(0);
                        }
                    }
                    '\'' => {
                        if let Some(length) = char_literal_length(&chars[i..]) {
                            i += length;
                        }
                    }
                    '(' | '[' | '{' => stack.push(c),
                    ')' | ']' | '}' => {
                        let opener = match c {
                            ')' => '(',
                            ']' => '[',
                            _ => '{',
                        };
                        if stack.pop() != Some(opener) {
                            return Completeness::Invalid;
                        }
                    }
                    _ => {}
                }
            }
        }
        line_start = c == '\n' || (line_start && c.is_whitespace());
        i += 1;
    }
    match mode {
        Mode::Str | Mode::RawStr(_) | Mode::BlockComment(_) => Completeness::Incomplete {
            indent: String::new(),
        },
        _ if !stack.is_empty() => Completeness::Incomplete {
            indent: "    ".repeat(stack.len()),
        },
        _ => Completeness::Complete,
    }
}

/// `%magic`, `!shell`, `?help` and `:command` lines (not `::path`).
fn starts_special_line(rest: &[char]) -> bool {
    match rest.first() {
        Some('%') | Some('!') | Some('?') => true,
        Some(':') => rest.get(1) != Some(&':'),
        _ => false,
    }
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `r"`, `r#"`, `br##"`, `cr"`: returns (chars to skip to the quote, hashes).
fn raw_string_start(rest: &[char]) -> Option<(usize, usize)> {
    let mut j = 0;
    if rest.get(j) == Some(&'b') || rest.get(j) == Some(&'c') {
        j += 1;
    }
    if rest.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = rest[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    (rest.get(j) == Some(&'"')).then_some((j, hashes))
}

/// At a `'`: the length of a char literal minus one (to skip to its closing
/// quote), or `None` for a lifetime or label such as `'a`.
fn char_literal_length(rest: &[char]) -> Option<usize> {
    match rest.get(1) {
        Some('\\') => {
            // Skip the escaped character itself, then find the closing quote.
            let close = rest.iter().skip(3).position(|&c| c == '\'')?;
            Some(close + 3)
        }
        Some(_) if rest.get(2) == Some(&'\'') => Some(2),
        _ => None,
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
