//! The live progress bar of a download: one `display_data` with a display id,
//! then `update_display_data` at most every 250 ms (bytes, percent, MB/s,
//! ETA), and a last update that says 100% with the time and mean speed.
//! Without a cell (quiet, or in unit tests) it shows nothing.

use super::tables::{escape, size};
use crate::kernel::CellContext;
use crate::protocol::content::MimeBundle;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(250);
const WIDTH: usize = 24;

pub struct Progress {
    cell: Option<CellContext>,
    id: String,
    name: String,
    total: Option<u64>,
    /// Bytes that were already on disk when this run started (a resume).
    resumed_from: u64,
    started: Instant,
    shown: Option<Instant>,
}

impl Progress {
    /// Shows the bar at `done` bytes (quiet: `cell` is `None`).
    pub fn start(cell: Option<CellContext>, name: &str, total: Option<u64>, done: u64) -> Self {
        let progress = Progress {
            cell,
            id: format!("ferrolab-kaggle-{}", uuid::Uuid::new_v4().simple()),
            name: name.to_owned(),
            total,
            resumed_from: done,
            started: Instant::now(),
            shown: None,
        };
        if let Some(cell) = &progress.cell {
            cell.display(progress.bundle(done, false), Map::new(), Some(&progress.id));
        }
        progress
    }

    /// Updates the bar, at most every 250 ms.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        if self.shown.is_some_and(|shown| now - shown < EVERY) {
            return;
        }
        self.shown = Some(now);
        if let Some(cell) = &self.cell {
            cell.update_display(self.bundle(done, false), Map::new(), &self.id);
        }
    }

    /// The last update (100%), and the summary line it shows.
    pub fn finish(&mut self, done: u64) -> String {
        self.total = Some(done);
        let summary = self.summary(done);
        if let Some(cell) = &self.cell {
            cell.update_display(self.bundle(done, true), Map::new(), &self.id);
        }
        summary
    }

    /// Leaves the bar where it stopped, with a note (interrupted, failed).
    pub fn stop(&mut self, done: u64, note: &str) {
        if let Some(cell) = &self.cell {
            let mut bundle = self.bundle(done, false);
            for (_, value) in bundle.iter_mut() {
                if let Value::String(text) = value {
                    text.push_str(&format!(" — {}", escape(note)));
                }
            }
            cell.update_display(bundle, Map::new(), &self.id);
        }
    }

    fn rate(&self, done: u64) -> f64 {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        done.saturating_sub(self.resumed_from) as f64 / seconds
    }

    fn summary(&self, done: u64) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        format!(
            "{}: {} in {:.1} s ({}/s)",
            self.name,
            size(done),
            seconds,
            size(self.rate(done) as u64)
        )
    }

    fn bundle(&self, done: u64, finished: bool) -> MimeBundle {
        let (plain, html) = if finished {
            let summary = self.summary(done);
            (
                format!("{} {summary}", bar(1.0, 100)),
                format!(
                    "<div><progress value=\"100\" max=\"100\" style=\"width:12em\"></progress> 100% {}</div>",
                    escape(&summary)
                ),
            )
        } else {
            render(&self.name, done, self.total, self.rate(done))
        };
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(plain));
        data.insert("text/html".into(), Value::String(html));
        data
    }
}

fn bar(fraction: f64, percent: u64) -> String {
    let filled = ((fraction * WIDTH as f64).round() as usize).min(WIDTH);
    format!(
        "[{}{}] {percent:>3}%",
        "█".repeat(filled),
        "░".repeat(WIDTH - filled)
    )
}

fn eta(remaining: u64, rate: f64) -> String {
    if rate < 1.0 {
        return "ETA –".to_owned();
    }
    let seconds = (remaining as f64 / rate).ceil() as u64;
    if seconds >= 3600 {
        format!("ETA {}h{:02}m", seconds / 3600, seconds % 3600 / 60)
    } else if seconds >= 60 {
        format!("ETA {}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("ETA {seconds}s")
    }
}

/// The plain and HTML forms of an unfinished bar.
pub fn render(name: &str, done: u64, total: Option<u64>, rate: f64) -> (String, String) {
    let speed = format!("{}/s", size(rate as u64));
    match total.filter(|total| *total > 0) {
        Some(total) => {
            let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
            // Never 100% before the end.
            let percent =
                ((fraction * 100.0).floor() as u64).min(if done < total { 99 } else { 100 });
            let details = format!(
                "{} / {}  {speed}  {}",
                size(done),
                size(total),
                eta(total.saturating_sub(done), rate)
            );
            (
                format!("{name} {} {details}", bar(fraction, percent)),
                format!(
                    "<div><code>{}</code> <progress value=\"{percent}\" max=\"100\" style=\"width:12em\"></progress> {percent}% · {}</div>",
                    escape(name),
                    escape(&details).replace("  ", " · ")
                ),
            )
        }
        None => {
            let details = format!("{}  {speed}", size(done));
            (
                format!("{name} {details}"),
                format!(
                    "<div><code>{}</code> {}</div>",
                    escape(name),
                    escape(&details).replace("  ", " · ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_shows_bytes_percent_speed_and_eta() {
        let (plain, html) = render("train.csv", 5_000_000, Some(20_000_000), 1_000_000.0);
        assert!(plain.starts_with("train.csv [██████░░░"), "{plain}");
        assert!(
            plain.contains(" 25% 5.0 MB / 20 MB  1.0 MB/s  ETA 15s"),
            "{plain}"
        );
        assert!(html.contains("<progress value=\"25\""), "{html}");
        let (plain, _) = render("x", 999, Some(1000), 0.0);
        assert!(plain.contains(" 99%") && plain.contains("ETA –"), "{plain}");
        let (plain, _) = render("x", 1500, None, 3000.0);
        assert_eq!(plain, "x 1.5 kB  3.0 kB/s");
        assert_eq!(eta(7200, 1.0), "ETA 2h00m");
    }

    #[test]
    fn quiet_progress_says_100_percent_at_the_end() {
        let mut progress = Progress::start(None, "a.zip", Some(10), 0);
        progress.update(5);
        let summary = progress.finish(10);
        assert!(summary.starts_with("a.zip: 10 B in "), "{summary}");
        let bundle = progress.bundle(10, true);
        assert!(bundle["text/plain"].as_str().unwrap().contains("100%"));
    }
}
