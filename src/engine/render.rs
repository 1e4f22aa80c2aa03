//! Turns evcxr results into what Jupyter shows: MIME bundles for values and
//! rustc-style, colourised tracebacks for compile errors that point at the
//! user's own lines (not evcxr's generated wrapper).

use crate::protocol::content::MimeBundle;
use evcxr::CompilationError;
use serde_json::Value;
use std::collections::HashMap;

const RED_BOLD: &str = "\x1b[1;31m";
const YELLOW_BOLD: &str = "\x1b[1;33m";
const BLUE_BOLD: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// evcxr's `content_by_mime_type` as a bundle; JSON types are parsed. A unit
/// value (`()`, e.g. from a trailing `println!`) shows nothing, as in a REPL.
pub fn bundle(content: &HashMap<String, String>) -> Option<MimeBundle> {
    let is_unit = content.len() == 1 && content.get("text/plain").is_some_and(|text| text == "()");
    if content.is_empty() || is_unit {
        return None;
    }
    let mut bundle = MimeBundle::new();
    for (mime, text) in content {
        let value = if mime.contains("json") {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
        } else {
            Value::String(text.clone())
        };
        bundle.insert(mime.clone(), value);
    }
    Some(bundle)
}

/// One formatted error report, ready for an `error` message.
pub struct CompileReport {
    pub summary: String,
    pub traceback: Vec<String>,
}

/// Renders compile errors the way rustc prints them, against `source` (the
/// Rust code as the user wrote it). `first_line` is the cell line number of
/// `source`'s first line (1 unless magics came before it). `inserted_line` is
/// the line of a statement the engine put in before compiling (the run gate):
/// evcxr's lines after it are one further down than the user's.
pub fn compile_errors(
    errors: &[CompilationError],
    source: &str,
    first_line: usize,
    inserted_line: Option<usize>,
) -> CompileReport {
    let lines: Vec<&str> = source.lines().collect();
    let mut traceback = Vec::new();
    for (index, error) in errors.iter().enumerate() {
        if index > 0 {
            traceback.push(String::new());
        }
        render_one(error, &lines, first_line, inserted_line, &mut traceback);
    }
    let summary = errors
        .first()
        .map(|error| match error.code() {
            Some(code) => format!("error[{code}]: {}", error.message()),
            None => format!("{}: {}", error.level(), error.message()),
        })
        .unwrap_or_else(|| "compilation failed".to_owned());
    if errors.len() > 1 {
        traceback.push(String::new());
        traceback.push(format!(
            "{RED_BOLD}error{RESET}{BOLD}: could not compile the cell due to {} previous errors{RESET}",
            errors.len()
        ));
    }
    CompileReport { summary, traceback }
}

fn render_one(
    error: &CompilationError,
    lines: &[&str],
    first_line: usize,
    inserted_line: Option<usize>,
    out: &mut Vec<String>,
) {
    let user_line = |line: usize| match inserted_line {
        Some(inserted) if line > inserted => line - 1,
        _ => line,
    };
    let level = error.level();
    let color = if level == "warning" {
        YELLOW_BOLD
    } else {
        RED_BOLD
    };
    let code = error
        .code()
        .map(|code| format!("[{code}]"))
        .unwrap_or_default();
    out.push(format!(
        "{color}{level}{code}{RESET}{BOLD}: {}{RESET}",
        error.message()
    ));
    let spanned: Vec<_> = error
        .spanned_messages()
        .iter()
        .filter_map(|message| {
            message.span.map(|span| {
                let span = SpanLines {
                    start_line: user_line(span.start_line),
                    start_column: span.start_column,
                    end_line: user_line(span.end_line),
                    end_column: span.end_column,
                };
                (span, message)
            })
        })
        .collect();
    let width = spanned
        .iter()
        .map(|(span, _)| (span.end_line + first_line - 1).to_string().len())
        .max()
        .unwrap_or(1);
    let gutter = " ".repeat(width);
    if let Some((span, _)) = spanned
        .iter()
        .find(|(_, m)| m.is_primary)
        .or(spanned.first())
    {
        out.push(format!(
            "{gutter}{BLUE_BOLD}--> {RESET}cell:{}:{}",
            span.start_line + first_line - 1,
            span.start_column
        ));
    }
    if !spanned.is_empty() {
        out.push(format!("{gutter} {BLUE_BOLD}|{RESET}"));
    }
    for (span, message) in &spanned {
        for line_number in span.start_line..=span.end_line {
            let Some(text) = lines.get(line_number.wrapping_sub(1)) else {
                continue;
            };
            let shown = line_number + first_line - 1;
            out.push(format!("{BLUE_BOLD}{shown:>width$} |{RESET} {text}"));
            let (start, end) = marker_columns(span, line_number, text);
            let mark_color = if message.is_primary { color } else { BLUE_BOLD };
            let mark = if message.is_primary { '^' } else { '-' };
            let label = if line_number == span.end_line && !message.label.is_empty() {
                // evcxr cleans its wrapper's names out of messages, not labels.
                format!(
                    " {}",
                    message
                        .label
                        .replace(super::evcxr_contract::VARIABLE_STORE, "<end of input>")
                )
            } else {
                String::new()
            };
            out.push(format!(
                "{gutter} {BLUE_BOLD}|{RESET} {}{mark_color}{}{label}{RESET}",
                " ".repeat(start),
                mark.to_string().repeat(end.saturating_sub(start).max(1)),
            ));
        }
    }
    if !spanned.is_empty() {
        out.push(format!("{gutter} {BLUE_BOLD}|{RESET}"));
    }
    for help in error.help() {
        let mut help_lines = help.lines();
        if let Some(first) = help_lines.next() {
            out.push(format!(
                "{gutter} {BLUE_BOLD}={RESET} {BOLD}help{RESET}: {first}"
            ));
        }
        for rest in help_lines {
            out.push(format!("{gutter}   {rest}"));
        }
    }
    if let Some(hint) = error.evcxr_extra_hint() {
        out.push(format!(
            "{gutter} {BLUE_BOLD}={RESET} {BOLD}note{RESET}: {hint}"
        ));
    }
    if spanned.is_empty() && error.help().is_empty() {
        // No span in the user's code: show rustc's own rendering, which is the
        // most useful thing we have (e.g. errors in a `:dep` crate).
        for line in error.rendered().lines().skip(1) {
            out.push(line.to_owned());
        }
    }
}

/// evcxr's span (1-based lines and columns, end column exclusive).
#[derive(Clone, Copy)]
struct SpanLines {
    start_line: usize,
    start_column: usize,
    end_line: usize,
    end_column: usize,
}

/// Zero-based display columns (in chars) to underline on `line_number`.
fn marker_columns(span: &SpanLines, line_number: usize, text: &str) -> (usize, usize) {
    let length = text.chars().count();
    let start = if line_number == span.start_line {
        span.start_column.saturating_sub(1)
    } else {
        0
    };
    let end = if line_number == span.end_line {
        span.end_column.saturating_sub(1)
    } else {
        length
    };
    (start.min(length), end.min(length.max(start + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_parse_json_types_only() {
        let mut content = HashMap::new();
        content.insert("text/plain".to_owned(), "[1, 2]".to_owned());
        content.insert("application/json".to_owned(), "[1, 2]".to_owned());
        let bundle = bundle(&content).unwrap();
        assert_eq!(bundle["text/plain"], Value::String("[1, 2]".into()));
        assert_eq!(bundle["application/json"], serde_json::json!([1, 2]));
        assert!(super::bundle(&HashMap::new()).is_none());
        let unit = HashMap::from([("text/plain".to_owned(), "()".to_owned())]);
        assert!(super::bundle(&unit).is_none());
    }
}
