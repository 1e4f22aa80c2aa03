//! Splits a cell into the ordered pieces the router runs one after another.
//!
//! - `%%name args` on the first non-blank line makes the whole cell one cell
//!   magic (the rest is its body);
//! - a top-level line starting with `%` is a line magic, `!` a shell command
//!   (`!!` captures its output as the value);
//! - a whole cell that is a help query (`Vec?`, `%cd?`) is help;
//! - consecutive other lines are one Rust segment, evaluated by evcxr in one go
//!   (evcxr's `:commands` included).
//!
//! Lines inside a multi-line Rust construct or string are Rust even if they
//! start with `%` or `!` (see [`lexer`](super::lexer)). Line numbers are
//! 1-based cell lines, for error messages.

use super::help::{self, HelpQuery};
use super::lexer::{LineKind, scan};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Rust {
        code: String,
        first_line: usize,
    },
    LineMagic {
        name: String,
        args: String,
        line: usize,
    },
    CellMagic {
        name: String,
        args: String,
        body: String,
        line: usize,
    },
    Shell {
        command: String,
        capture: bool,
        line: usize,
    },
    Help(HelpQuery),
}

pub fn parse(cell: &str) -> Vec<Segment> {
    if let Some(query) = help::parse(cell) {
        return vec![Segment::Help(query)];
    }
    let lines: Vec<&str> = cell.split('\n').collect();
    if let Some(first) = lines.iter().position(|line| !line.trim().is_empty())
        && let Some(rest) = lines[first].trim_start().strip_prefix("%%")
    {
        let (name, args) = split_name(rest);
        return vec![Segment::CellMagic {
            name,
            args,
            body: lines[first + 1..].join("\n"),
            line: first + 1,
        }];
    }
    let (kinds, _) = scan(cell);
    let mut segments = Vec::new();
    let mut rust: Vec<&str> = Vec::new();
    let mut rust_start = 1;
    for (index, (line, kind)) in lines.iter().zip(kinds).enumerate() {
        let number = index + 1;
        if kind != LineKind::Special {
            if rust.is_empty() {
                rust_start = number;
            }
            rust.push(line);
            continue;
        }
        flush_rust(&mut segments, &mut rust, rust_start);
        let text = line.trim_start();
        if let Some(command) = text.strip_prefix("!!") {
            segments.push(Segment::Shell {
                command: command.trim().to_owned(),
                capture: true,
                line: number,
            });
        } else if let Some(command) = text.strip_prefix('!') {
            segments.push(Segment::Shell {
                command: command.trim().to_owned(),
                capture: false,
                line: number,
            });
        } else if let Some(magic) = text.strip_prefix('%') {
            let (name, args) = split_name(magic);
            segments.push(Segment::LineMagic {
                name,
                args,
                line: number,
            });
        } else {
            // A `?` line inside a longer cell: help for its target if it is one.
            match help::parse(text) {
                Some(query) => segments.push(Segment::Help(query)),
                None => {
                    rust_start = number;
                    rust.push(line);
                }
            }
        }
    }
    flush_rust(&mut segments, &mut rust, rust_start);
    segments
}

fn flush_rust(segments: &mut Vec<Segment>, rust: &mut Vec<&str>, first_line: usize) {
    if rust.iter().any(|line| !line.trim().is_empty()) {
        segments.push(Segment::Rust {
            code: rust.join("\n"),
            first_line,
        });
    }
    rust.clear();
}

/// `name rest of line` → (name, args). A `%%` name may itself start with `%`
/// when written `%%%`; that stays in the name for the unknown-magic error.
fn split_name(text: &str) -> (String, String) {
    let text = text.trim();
    match text.split_once(char::is_whitespace) {
        Some((name, args)) => (name.to_owned(), args.trim().to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(code: &str, first_line: usize) -> Segment {
        Segment::Rust {
            code: code.to_owned(),
            first_line,
        }
    }

    fn magic(name: &str, args: &str, line: usize) -> Segment {
        Segment::LineMagic {
            name: name.to_owned(),
            args: args.to_owned(),
            line,
        }
    }

    #[test]
    fn mixed_cell_in_order() {
        let cell = "%cd /tmp\nlet a = 1;\nlet b = 2;\n!echo {a}\na + b";
        assert_eq!(
            parse(cell),
            vec![
                magic("cd", "/tmp", 1),
                rust("let a = 1;\nlet b = 2;", 2),
                Segment::Shell {
                    command: "echo {a}".into(),
                    capture: false,
                    line: 4
                },
                rust("a + b", 5),
            ]
        );
    }

    #[test]
    fn cell_magic_owns_the_cell_only_on_the_first_line() {
        let cell = "\n%%bash -x\necho one\n%cd nowhere\n!ls";
        assert_eq!(
            parse(cell),
            vec![Segment::CellMagic {
                name: "bash".into(),
                args: "-x".into(),
                body: "echo one\n%cd nowhere\n!ls".into(),
                line: 2
            }]
        );
        // Later in a cell, %% is a line magic whose name starts with %, which
        // the registry reports as unknown.
        assert_eq!(
            parse("1\n%%bash"),
            vec![rust("1", 1), magic("%bash", "", 2)]
        );
    }

    #[test]
    fn magic_and_shell_text_inside_rust_stays_rust() {
        let cell = "let s = \"\n%not a magic\n!not a shell\n\";\nif flag {\n    !other\n}";
        assert_eq!(parse(cell), vec![rust(cell, 1)]);
    }

    #[test]
    fn capture_and_indented_lines() {
        assert_eq!(
            parse("  !!ls -1\n  %pwd"),
            vec![
                Segment::Shell {
                    command: "ls -1".into(),
                    capture: true,
                    line: 1
                },
                magic("pwd", "", 2),
            ]
        );
    }

    #[test]
    fn evcxr_commands_stay_with_rust() {
        assert_eq!(
            parse(":dep itoa = \"1\"\nitoa::Buffer::new();"),
            vec![rust(":dep itoa = \"1\"\nitoa::Buffer::new();", 1)]
        );
    }

    #[test]
    fn help_queries() {
        assert_eq!(
            parse("%cd?"),
            vec![Segment::Help(HelpQuery {
                target: "%cd".into(),
                detailed: false
            })]
        );
        assert!(matches!(parse("let x = 1;\n?Vec")[1], Segment::Help(_)));
    }

    #[test]
    fn blank_lines_between_magics_make_no_segments() {
        assert_eq!(
            parse("%pwd\n\n%pwd"),
            vec![magic("pwd", "", 1), magic("pwd", "", 3)]
        );
    }
}
