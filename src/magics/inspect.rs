//! Looking around the session: `%who`, `%whos`, `%history`, `%lsmagic`,
//! `%magic`.

use super::args::parse;
use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::kernel::StreamName;
use serde_json::{Value, json};

pub fn magics() -> Vec<Magic> {
    vec![
        Magic {
            name: "who",
            kind: Kind::Line,
            summary: "names of the variables defined in the session",
            help: "%who\n\nLists the session's variables (evcxr's :vars has their types too).",
            run: who,
        },
        Magic {
            name: "whos",
            kind: Kind::Line,
            summary: "variables with their types",
            help: "%whos\n\nA table of the session's variables and their Rust types.",
            run: whos,
        },
        Magic {
            name: "history",
            kind: Kind::Line,
            summary: "cells run before",
            help: HISTORY_HELP,
            run: history,
        },
        Magic {
            name: "lsmagic",
            kind: Kind::Line,
            summary: "list every magic",
            help: "%lsmagic\n\nLists the line and cell magics. `%name?` shows one magic's help.",
            run: lsmagic,
        },
        Magic {
            name: "magic",
            kind: Kind::Line,
            summary: "how magics work, with every magic's help",
            help: "%magic\n\nPrints an overview of the cell syntax and the help of every magic.",
            run: magic,
        },
    ]
}

const HISTORY_HELP: &str = "\
%history [-n] [-l [N]] [-g PATTERN] [RANGE ...]

Shows the input of cells run before (kept on disk, across restarts).

    %history            this session's cells
    %history 4 7-9      cell 4 and cells 7 to 9 of this session
    %history 12/1-5     cells 1 to 5 of session 12;  ~1/ is the previous session
    %history -l 5       the last 5 cells, any session
    %history -g loss    cells containing `loss` (glob, any session)
    -n                  prefix each cell with its number (session/line)";

fn who(call: &mut Call) -> MagicResult {
    let variables = call.engine.variables();
    if variables.is_empty() {
        call.cell
            .stream(StreamName::Stdout, "Interactive namespace is empty.\n");
        return Ok(None);
    }
    let names: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
    call.cell
        .stream(StreamName::Stdout, &format!("{}\n", names.join("\t")));
    Ok(None)
}

fn whos(call: &mut Call) -> MagicResult {
    let variables = call.engine.variables();
    if variables.is_empty() {
        call.cell
            .stream(StreamName::Stdout, "Interactive namespace is empty.\n");
        return Ok(None);
    }
    let width = variables
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut text = format!("{:width$}   Type\n{}\n", "Variable", "-".repeat(width + 7));
    for (name, ty) in &variables {
        text.push_str(&format!("{name:width$}   {ty}\n"));
    }
    call.cell.stream(StreamName::Stdout, &text);
    Ok(None)
}

#[derive(clap::Parser, Debug)]
#[command(disable_help_flag = true)]
struct HistoryArgs {
    /// Show session/line numbers.
    #[arg(short = 'n')]
    numbers: bool,
    /// The last N cells (default 10), any session.
    #[arg(short = 'l', num_args = 0..=1, default_missing_value = "10")]
    last: Option<usize>,
    /// Glob search (any session).
    #[arg(short = 'g', num_args = 0..=1, default_missing_value = "*")]
    pattern: Option<String>,
    ranges: Vec<String>,
}

/// `4`, `4-6` (inclusive), `4-` (to the end), `S/4-6`, `~1/` → request JSON.
fn range_request(range: &str) -> Result<Value, ErrorInfo> {
    let bad = || {
        ErrorInfo::usage(format!(
            "%history: cannot read the range `{range}` (try 4, 4-6, 4-, 12/1-5 or ~1/)"
        ))
    };
    let (session, lines) = match range.split_once('/') {
        Some((session, lines)) => {
            let session = match session.strip_prefix('~') {
                Some(back) => -back.parse::<i64>().map_err(|_| bad())?,
                None => session.parse::<i64>().map_err(|_| bad())?,
            };
            (session, lines)
        }
        None => (0, range),
    };
    let (start, stop) = if lines.is_empty() {
        (1, None)
    } else if let Some((from, to)) = lines.split_once('-') {
        let from: i64 = from.parse().map_err(|_| bad())?;
        let stop = if to.is_empty() {
            None
        } else {
            Some(to.parse::<i64>().map_err(|_| bad())? + 1)
        };
        (from, stop)
    } else {
        let line: i64 = lines.parse().map_err(|_| bad())?;
        (line, Some(line + 1))
    };
    Ok(
        json!({"hist_access_type": "range", "session": session, "start": start, "stop": stop, "output": false, "raw": true}),
    )
}

fn history(call: &mut Call) -> MagicResult {
    let args: HistoryArgs = parse("history", call.args)?;
    let mut requests = Vec::new();
    if let Some(n) = args.last {
        requests.push(json!({"hist_access_type": "tail", "n": n, "output": false, "raw": true}));
    }
    if let Some(pattern) = &args.pattern {
        let glob = if pattern.contains(['*', '?', '[']) {
            pattern.clone()
        } else {
            format!("*{pattern}*")
        };
        requests.push(
            json!({"hist_access_type": "search", "pattern": glob, "output": false, "raw": true}),
        );
    }
    for range in &args.ranges {
        requests.push(range_request(range)?);
    }
    if requests.is_empty() {
        requests.push(json!({"hist_access_type": "range", "session": 0, "start": 1, "output": false, "raw": true}));
    }
    let mut text = String::new();
    for request in requests {
        let request =
            serde_json::from_value(request).map_err(|e| ErrorInfo::usage(e.to_string()))?;
        for entry in call.cell.history(&request) {
            let (session, line, input) =
                (&entry[0], &entry[1], entry[2].as_str().unwrap_or_default());
            if args.numbers {
                let mut lines = input.lines();
                text.push_str(&format!(
                    "{session}/{line}: {}\n",
                    lines.next().unwrap_or_default()
                ));
                for rest in lines {
                    text.push_str(&format!("    {rest}\n"));
                }
            } else {
                text.push_str(input);
                text.push('\n');
            }
        }
    }
    call.cell.stream(StreamName::Stdout, &text);
    Ok(None)
}

fn listing(call: &Call) -> String {
    let names = |kind: Kind| {
        call.registry
            .all()
            .iter()
            .filter(|magic| magic.kind == kind)
            .map(|magic| format!("{}{}", kind.prefix(), magic.name))
            .collect::<Vec<_>>()
            .join("  ")
    };
    format!(
        "Available line magics:\n{}\n\nAvailable cell magics:\n{}\n\nShell: !cmd (output streamed), !!cmd (output as a value). Help: %name? or Vec?.\nevcxr commands start with `:` (:help lists them).",
        names(Kind::Line),
        names(Kind::Cell)
    )
}

fn lsmagic(call: &mut Call) -> MagicResult {
    Ok(text_result(listing(call)))
}

fn magic(call: &mut Call) -> MagicResult {
    let mut text = String::from(
        "ferrolab magics\n===============\n\nA cell is Rust, run by evcxr, with these lines mixed in at the top level:\n  %name args     a line magic\n  %%name args    a cell magic (first line only; it owns the whole cell)\n  !command       a shell command, output streamed ({expr} is a Rust value)\n  !!command      a shell command whose output is the cell's value\n  name?          documentation (for magics: %name?)\n  :command       an evcxr command (:dep, :vars, :opt, :help, ...)\n\n",
    );
    text.push_str(&listing(call));
    text.push_str("\n\n");
    for magic in call.registry.all() {
        text.push_str(&format!(
            "{}{} — {}\n\n{}\n\n",
            magic.kind.prefix(),
            magic.name,
            magic.summary,
            magic.help.trim()
        ));
    }
    call.cell.stream(StreamName::Stdout, &text);
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range_request("4").unwrap()["stop"], 5);
        let r = range_request("4-6").unwrap();
        assert_eq!(
            (r["start"].as_i64(), r["stop"].as_i64()),
            (Some(4), Some(7))
        );
        assert!(range_request("4-").unwrap()["stop"].is_null());
        let s = range_request("12/1-5").unwrap();
        assert_eq!(
            (
                s["session"].as_i64(),
                s["start"].as_i64(),
                s["stop"].as_i64()
            ),
            (Some(12), Some(1), Some(6))
        );
        assert_eq!(range_request("~1/").unwrap()["session"], -1);
        assert!(range_request("x").is_err());
        assert!(range_request("1-y").is_err());
    }
}
