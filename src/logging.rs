//! The kernel's log: lines go to the Jupyter server's console (the stderr the
//! kernel was started with) and, if `FERROLAB_LOG_FILE` is set, to that file.
//!
//! The original stderr is duplicated before the engine redirects fd 2 to catch
//! cargo's progress lines, so log lines never end up in a notebook. Level from
//! `FERROLAB_LOG` (error, warn, info, debug, trace; default warn). Callers never
//! log secrets; this module does not try to scrub them.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

struct Logger {
    sinks: Mutex<Vec<File>>,
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // Other crates (zeromq logs every disconnect at info) only above warn.
        let level = if metadata.target().starts_with("ferrolab") {
            self.level
        } else {
            self.level.min(log::LevelFilter::Warn)
        };
        metadata.level() <= level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "[ferrolab {} {}] {}\n",
            chrono::Local::now().format("%H:%M:%S%.3f"),
            record.level(),
            record.args()
        );
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for sink in sinks.iter_mut() {
            let _ = sink.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. Call once, before anything redirects fd 2.
pub fn init() {
    let level = std::env::var("FERROLAB_LOG")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let mut sinks = Vec::new();
    if let Ok(duplicate) = crate::os::fds::duplicate(2) {
        sinks.push(File::from(duplicate));
    }
    if let Some(path) = std::env::var_os("FERROLAB_LOG_FILE")
        && let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        sinks.push(file);
    }
    let logger = Logger {
        sinks: Mutex::new(sinks),
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
