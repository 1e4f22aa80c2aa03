//! `%time`, `%%time` and `%timeit`: how long Rust code takes to run.
//!
//! `%time` / `%%time` run the code once, as a normal cell (variables it
//! defines stay), and report the run's wall and CPU time measured in the
//! runtime process — compile time is reported separately, never mixed in.
//! `%timeit` loops an expression in the runtime (optimised like any cell),
//! choosing the loop count so one run takes at least 0.2 s, and prints
//! `mean ± std per loop (mean ± std. dev. of R runs, N loops each)` as IPython.

use super::args::parse;
use super::{Call, ErrorInfo, Kind, Magic, MagicResult};
use crate::engine::RunTimes;
use crate::kernel::{ExecuteOutcome, StreamName};
use std::time::{Duration, Instant};

pub fn magics() -> Vec<Magic> {
    vec![
        Magic {
            name: "time",
            kind: Kind::Line,
            summary: "run Rust code once and report its run time",
            help: TIME_HELP,
            run: time_line,
        },
        Magic {
            name: "time",
            kind: Kind::Cell,
            summary: "run the cell's Rust code once and report its run time",
            help: TIME_HELP,
            run: time_cell,
        },
        Magic {
            name: "timeit",
            kind: Kind::Line,
            summary: "time a Rust expression over many loops",
            help: "%timeit [-n N] [-r R] EXPR\n\nEvaluates EXPR N times per run, R runs (default 7), and prints the mean\nand standard deviation per loop. Without -n, N grows (1, 2, 5, 10, 20, …)\nuntil one run takes at least 0.2 s. The expression is compiled like any\ncell (evcxr's :opt level) and its value is kept alive with black_box.\n\nExample:\n    %timeit v.iter().map(|x| x * x).sum::<f64>()\n    %timeit -n 1000 -r 3 fib(20)",
            run: timeit,
        },
    ]
}

const TIME_HELP: &str = "\
%time CODE
%%time

Runs the Rust code once, like a normal cell (variables it defines are kept
and its value is shown), then prints the time spent running it:

    CPU times: user 1.2 s, sys: 10 ms, total: 1.21 s
    Wall time: 1.25 s
    Compile time: 310 ms

Wall and CPU times cover only the code's run in the runtime process; the
compile before it is listed on its own line.";

fn time_line(call: &mut Call) -> MagicResult {
    let code = call.args.to_owned();
    if code.trim().is_empty() {
        return Err(ErrorInfo::usage(
            "%time needs Rust code, e.g. `%time train(&data)`",
        ));
    }
    timed(call, &code)
}

fn time_cell(call: &mut Call) -> MagicResult {
    let code = call.body.to_owned();
    timed(call, &code)
}

fn timed(call: &mut Call, code: &str) -> MagicResult {
    let started = Instant::now();
    let ran = call.engine.run(code, 1, call.cell);
    let (outcome, times) = (ran.outcome, ran.times);
    let total = started.elapsed();
    match outcome {
        ExecuteOutcome::Ok { result, .. } => {
            call.cell.stream(StreamName::Stdout, &report(&times, total));
            Ok(result)
        }
        ExecuteOutcome::Error(info) => Err(info),
    }
}

fn report(times: &RunTimes, total: Duration) -> String {
    let cpu = times.user + times.system;
    let compile = total.saturating_sub(times.wall);
    format!(
        "CPU times: user {}, sys: {}, total: {}\nWall time: {}\nCompile time: {}\n",
        format_seconds(times.user.as_secs_f64()),
        format_seconds(times.system.as_secs_f64()),
        format_seconds(cpu.as_secs_f64()),
        format_seconds(times.wall.as_secs_f64()),
        format_seconds(compile.as_secs_f64()),
    )
}

/// IPython's time format: three significant digits and a unit.
pub fn format_seconds(seconds: f64) -> String {
    if seconds <= 0.0 {
        return "0 ns".to_owned();
    }
    let (value, unit) = if seconds >= 1.0 {
        (seconds, "s")
    } else if seconds >= 1e-3 {
        (seconds * 1e3, "ms")
    } else if seconds >= 1e-6 {
        (seconds * 1e6, "µs")
    } else {
        (seconds * 1e9, "ns")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

#[derive(clap::Parser, Debug)]
#[command(disable_help_flag = true)]
struct TimeitFlags {
    /// Loops per run (default: chosen automatically).
    #[arg(short = 'n')]
    loops: Option<u64>,
    /// Runs (default 7).
    #[arg(short = 'r', default_value_t = 7)]
    runs: u64,
}

fn timeit(call: &mut Call) -> MagicResult {
    // Flags come first; everything after them is the expression, minus signs
    // and all, so it is split off before clap sees the flags.
    let (flags, expression) = split_timeit_args(call.args);
    let args: TimeitFlags = parse("timeit", &flags)?;
    if expression.trim().is_empty() {
        return Err(ErrorInfo::usage(
            "%timeit needs an expression, e.g. `%timeit v.len()`",
        ));
    }
    if args.runs == 0 || args.loops == Some(0) {
        return Err(ErrorInfo::usage("%timeit: -n and -r must be at least 1"));
    }
    let code = timeit_code(&expression, args.loops.unwrap_or(0), args.runs);
    let result = match call.engine.execute(&code, 1, call.cell) {
        ExecuteOutcome::Ok {
            result: Some(bundle),
            ..
        } => bundle
            .get("text/plain")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        ExecuteOutcome::Ok { result: None, .. } => None,
        ExecuteOutcome::Error(info) => return Err(info),
    };
    let stats = result
        .as_deref()
        .and_then(TimeitStats::parse)
        .ok_or_else(|| ErrorInfo::new("TimeitError", "the timing loop returned no measurements"))?;
    call.cell.stream(StreamName::Stdout, &stats.report());
    Ok(None)
}

/// `-n 10 -r 3 expr with -minus` → ("-n 10 -r 3", "expr with -minus"): flags
/// are only recognised before the expression.
fn split_timeit_args(args: &str) -> (String, String) {
    let mut rest = args.trim();
    let mut flags = Vec::new();
    while let Some(flag) = ["-n", "-r"]
        .iter()
        .find(|flag| rest.starts_with(&format!("{flag} ")))
    {
        let after = rest[flag.len()..].trim_start();
        let value_end = after.find(char::is_whitespace).unwrap_or(after.len());
        flags.push(format!("{flag} {}", &after[..value_end]));
        rest = after[value_end..].trim_start();
    }
    (flags.join(" "), rest.to_owned())
}

/// A block (so nothing leaks into the session) whose value is the summary.
fn timeit_code(expression: &str, loops: u64, runs: u64) -> String {
    format!(
        r#"{{
    let ferrolab_time_loops = |loops: u64| -> f64 {{
        let start = std::time::Instant::now();
        for _ in 0..loops {{
            std::hint::black_box({{ {expression} }});
        }}
        start.elapsed().as_secs_f64()
    }};
    let mut ferrolab_loops: u64 = {loops};
    if ferrolab_loops == 0 {{
        let mut base = 1u64;
        'search: loop {{
            for factor in [1u64, 2, 5] {{
                if ferrolab_time_loops(base * factor) >= 0.2 {{
                    ferrolab_loops = base * factor;
                    break 'search;
                }}
            }}
            base *= 10;
        }}
    }}
    let ferrolab_times: Vec<f64> = (0..{runs}).map(|_| ferrolab_time_loops(ferrolab_loops) / ferrolab_loops as f64).collect();
    ferrolab_times.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ") + &format!(" loops={{ferrolab_loops}}")
}}"#
    )
}

/// Per-loop times of each run, parsed from the block's value.
#[derive(Debug, PartialEq)]
struct TimeitStats {
    per_loop: Vec<f64>,
    loops: u64,
}

impl TimeitStats {
    fn parse(debug: &str) -> Option<TimeitStats> {
        let text = debug.trim().strip_prefix('"')?.strip_suffix('"')?;
        let mut per_loop = Vec::new();
        let mut loops = None;
        for word in text.split_whitespace() {
            match word.strip_prefix("loops=") {
                Some(n) => loops = n.parse().ok(),
                None => per_loop.push(word.parse().ok()?),
            }
        }
        (!per_loop.is_empty()).then_some(TimeitStats {
            per_loop,
            loops: loops?,
        })
    }

    fn report(&self) -> String {
        let runs = self.per_loop.len();
        let mean = self.per_loop.iter().sum::<f64>() / runs as f64;
        let variance = self
            .per_loop
            .iter()
            .map(|t| (t - mean).powi(2))
            .sum::<f64>()
            / runs as f64;
        let std = variance.sqrt();
        let plural = |n: u64, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        let mut text = format!(
            "{} ± {} per loop (mean ± std. dev. of {}, {} each)\n",
            format_seconds(mean),
            format_seconds(std),
            plural(runs as u64, "run"),
            plural(self.loops, "loop"),
        );
        let fastest = self.per_loop.iter().cloned().fold(f64::INFINITY, f64::min);
        let slowest = self.per_loop.iter().cloned().fold(0.0, f64::max);
        if fastest > 0.0 && slowest / fastest > 4.0 {
            text.push_str(&format!(
                "The slowest run took {:.2} times longer than the fastest. This could mean that an intermediate result is being cached.\n",
                slowest / fastest
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_ipython() {
        assert_eq!(format_seconds(1.5), "1.50 s");
        assert_eq!(format_seconds(0.0123), "12.3 ms");
        assert_eq!(format_seconds(0.000_456), "456 µs");
        assert_eq!(format_seconds(2.5e-8), "25.0 ns");
        assert_eq!(format_seconds(0.0), "0 ns");
    }

    #[test]
    fn timeit_report() {
        let stats = TimeitStats::parse("\"0.001 0.001 0.001 loops=100\"").unwrap();
        assert_eq!(stats.loops, 100);
        assert_eq!(
            stats.report(),
            "1.00 ms ± 0 ns per loop (mean ± std. dev. of 3 runs, 100 loops each)\n"
        );
        let one = TimeitStats::parse("\"0.5 loops=1\"").unwrap();
        assert!(one.report().contains("of 1 run, 1 loop each"));
        let noisy = TimeitStats::parse("\"0.001 0.01 loops=1\"").unwrap();
        assert!(noisy.report().contains("slowest run took 10.00 times"));
        assert!(TimeitStats::parse("\"loops=3\"").is_none());
    }

    #[test]
    fn flags_only_before_the_expression() {
        assert_eq!(
            split_timeit_args("-n 10 -r 3 a - 1"),
            ("-n 10 -r 3".into(), "a - 1".into())
        );
        assert_eq!(split_timeit_args("x -n"), (String::new(), "x -n".into()));
    }

    #[test]
    fn report_lists_compile_time_separately() {
        let times = RunTimes {
            runs: 1,
            wall: Duration::from_millis(250),
            user: Duration::from_millis(200),
            system: Duration::from_millis(10),
        };
        let text = report(&times, Duration::from_millis(600));
        assert!(
            text.contains("CPU times: user 200 ms, sys: 10.0 ms, total: 210 ms"),
            "{text}"
        );
        assert!(text.contains("Wall time: 250 ms"));
        assert!(text.contains("Compile time: 350 ms"));
    }
}
