//! Rate-limited logging of refused messages, so a hostile or broken client
//! cannot flood the log: per channel, the first [`FULL_PER_WINDOW`] drops of
//! each minute are logged in full, then one line says the rest are only
//! counted, and the next window starts with the count of what was skipped.

use std::fmt::Display;
use std::time::{Duration, Instant};

pub const FULL_PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

pub struct DropLog {
    channel: &'static str,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl DropLog {
    pub fn new(channel: &'static str) -> Self {
        DropLog {
            channel,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// The lines to log for one more dropped message (none once over the limit).
    pub fn record(&mut self, now: Instant, error: &dyn Display) -> Vec<String> {
        let mut lines = Vec::new();
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW);
        if expired {
            if self.suppressed > 0 {
                lines.push(format!(
                    "{}: {} more messages were dropped in the previous minute (not logged one by one)",
                    self.channel, self.suppressed
                ));
            }
            self.window_start = Some(now);
            self.in_window = 0;
            self.suppressed = 0;
        }
        self.in_window += 1;
        if self.in_window <= FULL_PER_WINDOW {
            lines.push(format!("{}: dropped a message: {error}", self.channel));
        } else {
            if self.in_window == FULL_PER_WINDOW + 1 {
                lines.push(format!(
                    "{}: more than {FULL_PER_WINDOW} bad messages this minute; counting the rest without logging each",
                    self.channel
                ));
            }
            self.suppressed += 1;
        }
        lines
    }

    /// Logs one dropped message at warn level, rate-limited.
    pub fn warn(&mut self, error: &dyn Display) {
        for line in self.record(Instant::now(), error) {
            log::warn!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_ten_a_minute_then_counts() {
        let mut log = DropLog::new("shell");
        let start = Instant::now();
        let mut lines = Vec::new();
        for i in 0..1000 {
            lines.extend(log.record(start + Duration::from_millis(i), &"bad signature"));
        }
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "shell: dropped a message: bad signature");
        assert!(lines[10].contains("counting the rest"));
        let next = log.record(start + Duration::from_secs(61), &"bad signature");
        assert_eq!(
            next,
            [
                "shell: 990 more messages were dropped in the previous minute (not logged one by one)",
                "shell: dropped a message: bad signature"
            ]
        );
    }
}
