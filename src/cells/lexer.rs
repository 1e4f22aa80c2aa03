//! Just enough of Rust's lexical structure to know, for every line of a cell,
//! whether it starts at the top level or inside a bracket, string or comment.
//!
//! Tracks brackets, strings (plain, byte, C and raw with any number of `#`),
//! char literals versus lifetimes, and nested block comments. A line that
//! starts at the top level with `%`, `!` or `?` (a magic, shell or help line)
//! or with a single `:` (an evcxr command) is not lexed: `%cd (` opens nothing.
//! Both the cell router and `is_complete` read cells through [`scan`].

/// What one line of a cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Rust source (possibly inside a multi-line construct).
    Rust,
    /// A top-level `%`, `!` or `?` line.
    Special,
    /// A top-level evcxr `:command` line.
    Command,
}

/// Where the scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Everything closed.
    Balanced,
    /// Brackets still open (how many).
    Open(usize),
    /// Inside a string or block comment.
    Unterminated,
    /// A closer that matches nothing, or the wrong opener.
    Mismatched,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Code,
    LineComment,
    BlockComment(u32),
    Str,
    RawStr(usize),
}

/// Classifies each line (`str::split('\n')` lines) and reports the end state.
pub fn scan(code: &str) -> (Vec<LineKind>, End) {
    let mut kinds = Vec::new();
    let mut stack: Vec<char> = Vec::new();
    let mut mode = Mode::Code;
    for line in code.split('\n') {
        let at_top = stack.is_empty() && mode == Mode::Code;
        let trimmed = line.trim_start();
        if at_top && is_special(trimmed) {
            kinds.push(LineKind::Special);
            continue;
        }
        if at_top && is_command(trimmed) {
            kinds.push(LineKind::Command);
            continue;
        }
        kinds.push(LineKind::Rust);
        if !lex_line(line, &mut stack, &mut mode) {
            return (kinds, End::Mismatched);
        }
        if mode == Mode::LineComment {
            mode = Mode::Code;
        }
    }
    let end = match mode {
        Mode::Str | Mode::RawStr(_) | Mode::BlockComment(_) => End::Unterminated,
        _ if !stack.is_empty() => End::Open(stack.len()),
        _ => End::Balanced,
    };
    (kinds, end)
}

fn is_special(line: &str) -> bool {
    line.starts_with('%') || line.starts_with('!') || line.starts_with('?')
}

fn is_command(line: &str) -> bool {
    line.starts_with(':') && !line.starts_with("::")
}

/// Lexes one line; false on a mismatched closer.
fn lex_line(line: &str, stack: &mut Vec<char>, mode: &mut Mode) -> bool {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match *mode {
            Mode::LineComment => return true,
            Mode::BlockComment(depth) => {
                if c == '*' && next == Some('/') {
                    *mode = if depth == 1 {
                        Mode::Code
                    } else {
                        Mode::BlockComment(depth - 1)
                    };
                    i += 1;
                } else if c == '/' && next == Some('*') {
                    *mode = Mode::BlockComment(depth + 1);
                    i += 1;
                }
            }
            Mode::Str => {
                if c == '\\' {
                    i += 1;
                } else if c == '"' {
                    *mode = Mode::Code;
                }
            }
            Mode::RawStr(hashes) => {
                if c == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    *mode = Mode::Code;
                    i += hashes;
                }
            }
            Mode::Code => match c {
                '/' if next == Some('/') => *mode = Mode::LineComment,
                '/' if next == Some('*') => {
                    *mode = Mode::BlockComment(1);
                    i += 1;
                }
                '"' => *mode = Mode::Str,
                'r' | 'b' | 'c' if !prev_is_ident(&chars, i) => {
                    if let Some((skip, hashes)) = raw_string_start(&chars[i..]) {
                        *mode = Mode::RawStr(hashes);
                        i += skip;
                    } else if (c == 'b' || c == 'c') && next == Some('"') {
                        *mode = Mode::Str;
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
                        return false;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    // A string or block comment may continue on the next line; a line comment ends here.
    true
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

/// At a `'`: how far to skip to a char literal's closing quote, or `None` for
/// a lifetime or label such as `'a`.
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
    use LineKind::*;

    #[test]
    fn classifies_lines() {
        let (kinds, end) = scan("%cd /tmp\nlet x = 1;\n!ls\n:dep regex = \"1\"\nx");
        assert_eq!(kinds, vec![Special, Rust, Special, Command, Rust]);
        assert_eq!(end, End::Balanced);
    }

    #[test]
    fn lines_inside_constructs_stay_rust() {
        let code =
            "let s = \"\n!not shell\n%not magic\";\nif x {\n!y\n}\n/*\n%c\n*/\n::std::mem::drop(1)";
        let (kinds, end) = scan(code);
        assert!(kinds.iter().all(|k| *k == Rust), "{kinds:?}");
        assert_eq!(end, End::Balanced);
    }

    #[test]
    fn line_comments_end_at_the_newline() {
        let (kinds, _) = scan("let a = 1; // ( {\n!echo hi");
        assert_eq!(kinds, vec![Rust, Special]);
    }

    #[test]
    fn special_lines_do_not_open_brackets() {
        assert_eq!(scan("%cd (weird dir\n1").1, End::Balanced);
    }
}
