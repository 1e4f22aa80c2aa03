//! The live progress bar of a download in the cell: the client's
//! [`Progress`] shown as one `display_data` with a display id per transfer,
//! then `update_display_data` at most every 250 ms (bytes, percent, MB/s,
//! ETA), and a last update that says 100% with the time and mean speed.

use crate::kernel::CellContext;
use crate::protocol::content::MimeBundle;
use ferrolab_kaggle::Progress;
use ferrolab_kaggle::tables::{escape, size};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(250);
const WIDTH: usize = 24;

/// The bar of the transfer under way.
struct Bar {
    id: String,
    name: String,
    total: Option<u64>,
    /// Bytes that were already on disk when this transfer started (a resume).
    resumed_from: u64,
    started: Instant,
    shown: Option<Instant>,
}

/// A download's progress, drawn in `cell`.
pub struct CellProgress {
    cell: CellContext,
    bar: Option<Bar>,
}

impl CellProgress {
    pub fn new(cell: CellContext) -> Self {
        CellProgress { cell, bar: None }
    }
}

impl Progress for CellProgress {
    /// Shows a new bar at `done` bytes.
    fn start(&mut self, name: &str, total: Option<u64>, done: u64) {
        let bar = Bar {
            id: format!("ferrolab-kaggle-{}", uuid::Uuid::new_v4().simple()),
            name: name.to_owned(),
            total,
            resumed_from: done,
            started: Instant::now(),
            shown: None,
        };
        self.cell
            .display(bar.bundle(done, false), Map::new(), Some(&bar.id));
        self.bar = Some(bar);
    }

    /// Updates the bar, at most every 250 ms.
    fn update(&mut self, done: u64) {
        let Some(bar) = &mut self.bar else { return };
        let now = Instant::now();
        if bar.shown.is_some_and(|shown| now - shown < EVERY) {
            return;
        }
        bar.shown = Some(now);
        self.cell
            .update_display(bar.bundle(done, false), Map::new(), &bar.id);
    }

    /// The last update: 100%, the time and the mean speed.
    fn finish(&mut self, done: u64) {
        let Some(bar) = &mut self.bar else { return };
        bar.total = Some(done);
        self.cell
            .update_display(bar.bundle(done, true), Map::new(), &bar.id);
    }

    /// Leaves the bar where it stopped, with a note (interrupted, failed).
    fn stop(&mut self, done: u64, note: &str) {
        let Some(bar) = &self.bar else { return };
        let mut bundle = bar.bundle(done, false);
        for (_, value) in bundle.iter_mut() {
            if let Value::String(text) = value {
                text.push_str(&format!(" — {}", escape(note)));
            }
        }
        self.cell.update_display(bundle, Map::new(), &bar.id);
    }
}

impl Bar {
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
            plain.contains(" 25% 5.0 MB / 20.0 MB  1.0 MB/s  ETA 15s"),
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
    fn the_last_update_says_100_percent_and_the_summary() {
        let bar = Bar {
            id: String::new(),
            name: "a.zip".into(),
            total: Some(10),
            resumed_from: 0,
            started: Instant::now(),
            shown: None,
        };
        assert!(bar.summary(10).starts_with("a.zip: 10 B in "));
        let bundle = bar.bundle(10, true);
        let plain = bundle["text/plain"].as_str().unwrap();
        assert!(
            plain.contains("100%") && plain.contains("a.zip: 10 B in "),
            "{plain}"
        );
    }
}
