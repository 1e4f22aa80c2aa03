//! Tables and reports: `list`, `verify`, `status`, `rm`, the save and restore
//! summaries, and the hint added when a crash or an interrupt loses variables.
//! Every table comes as `text/plain` and `text/html`.

use super::place::Place;
use super::restore::Report;
use super::save::{Saved, now_unix};
use super::state::{CheckpointState, Env};
use crate::protocol::content::MimeBundle;
use ferrolab_checkpoint::Status;
use ferrolab_checkpoint::commit::{self, Listed};
use ferrolab_checkpoint::manifest::Depth;
use std::path::Path;

/// A size as every ferrolab table writes it (`1.2 MB`).
pub fn human_size(bytes: u64) -> String {
    ferrolab_tables::size(bytes)
}

pub fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d ago", s / 86_400),
    }
}

pub fn utc_time(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "?".into())
}

/// A table of left-aligned columns under a caption, as aligned text and HTML.
pub fn table(headers: &[&'static str], rows: &[Vec<String>], caption: &str) -> MimeBundle {
    ferrolab_tables::Table {
        columns: headers
            .iter()
            .map(|title| ferrolab_tables::left(title))
            .collect(),
        rows: rows
            .iter()
            .map(|row| row.iter().map(|cell| cell.as_str().into()).collect())
            .collect(),
        caption: Some(caption.to_owned()),
        footer: None,
    }
    .bundle()
}

fn metrics_text(metrics: &std::collections::BTreeMap<String, f64>) -> String {
    metrics
        .iter()
        .map(|(k, v)| format!("{k}={}", short_number(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// At most 6 decimals: `0.3333333432674408` → `0.333333`, `2.0` → `2`.
fn short_number(value: f64) -> String {
    let text = format!("{value:.6}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Full verification (every hash) when the directory is small, sizes otherwise.
pub fn depth_for_listing(dir: &Path) -> Depth {
    let total: u64 = commit::list(dir, Depth::Sizes)
        .map(|l| {
            l.iter()
                .filter_map(|e| e.manifest.as_ref().ok())
                .map(|m| m.total_size())
                .sum()
        })
        .unwrap_or(0);
    if total <= 256 * 1024 * 1024 {
        Depth::Hashes
    } else {
        Depth::Sizes
    }
}

pub fn list_table(place: &str, listed: &[Listed], depth: Depth) -> MimeBundle {
    let now = now_unix();
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|entry| match &entry.manifest {
            Ok(m) => {
                let saved = m.saved().count();
                let skipped = m.variables.len() - saved;
                vec![
                    entry.name.clone(),
                    utc_time(m.created_unix),
                    human_age(now - m.created_unix),
                    human_size(m.total_size()),
                    format!("{saved} saved, {skipped} not"),
                    metrics_text(&m.metrics),
                    m.origin.clone(),
                    "yes".into(),
                ]
            }
            Err(reason) => vec![
                entry.name.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("NO: {reason}"),
            ],
        })
        .collect();
    let checked = match depth {
        Depth::Hashes => "every hash checked",
        Depth::Sizes => "sizes checked; %checkpoint verify checks every hash",
    };
    table(
        &[
            "name",
            "time (UTC)",
            "age",
            "size",
            "variables",
            "metrics",
            "origin",
            "valid",
        ],
        &rows,
        &format!("Checkpoints in {place} ({checked})"),
    )
}

pub fn saved_summary(saved: &Saved) -> String {
    let m = &saved.manifest;
    let mut text = format!(
        "Saved {} to {} ({}, {:.1}s): ",
        m.name,
        saved.place,
        human_size(m.total_size()),
        saved.seconds
    );
    let names = |status: Status| -> Vec<String> {
        m.variables
            .iter()
            .filter(|v| v.status == status)
            .map(|v| match (&v.reason, status) {
                (Some(reason), Status::Skipped | Status::Failed) => {
                    format!("{}: {} — {}", v.name, v.ty, reason)
                }
                _ => format!("{}: {}", v.name, v.ty),
            })
            .collect()
    };
    let saved_vars = names(Status::Saved);
    text.push_str(&format!("{} variables saved", saved_vars.len()));
    if !saved_vars.is_empty() {
        text.push_str(&format!(" ({})", saved_vars.join(", ")));
    }
    text.push('\n');
    for line in names(Status::Skipped) {
        text.push_str(&format!("  skipped {line}\n"));
    }
    for line in names(Status::Failed) {
        text.push_str(&format!("  FAILED {line}\n"));
    }
    if !m.user_files.is_empty() {
        let files: Vec<&str> = m.user_files.iter().map(|f| f.original.as_str()).collect();
        text.push_str(&format!("  files: {}\n", files.join(", ")));
    }
    if !saved.removed.is_empty() {
        text.push_str(&format!(
            "  retention removed: {}\n",
            saved.removed.join(", ")
        ));
    }
    text.trim_end().to_owned()
}

pub fn restore_summary(report: &Report) -> String {
    let mut text = format!("Restored from {}:", report.name);
    let pairs = |items: &[(String, String)]| -> String {
        items
            .iter()
            .map(|(a, b)| format!("{a}: {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    text.push_str(&format!(
        "\n  restored {} ({})",
        report.restored.len(),
        pairs(&report.restored)
    ));
    for (name, why) in &report.skipped {
        text.push_str(&format!("\n  skipped {name}: {why}"));
    }
    for (name, why) in &report.failed {
        text.push_str(&format!("\n  FAILED {name}: {why}"));
    }
    if !report.files.is_empty() {
        text.push_str(&format!("\n  files: {}", report.files.join(", ")));
    }
    for note in &report.notes {
        text.push_str(&format!("\n  {note}"));
    }
    text
}

/// Added to the error when variables were lost.
pub fn lost_state_hint(state: &CheckpointState, lost: &[String], env: &Env) -> String {
    let shown = state
        .last_place
        .clone()
        .unwrap_or_else(|| state.destination(None, env));
    let place = Place::parse(&shown, env);
    let shown = place.as_ref().map_or(shown, |p| p.describe());
    let newest = place
        .ok()
        .and_then(|p| p.list(Depth::Sizes, &|| false).ok())
        .and_then(|l| l.into_iter().rev().find(Listed::is_valid));
    match newest {
        Some(entry) => {
            let manifest = entry.manifest.as_ref().ok();
            let age = manifest
                .map(|m| human_age(now_unix() - m.created_unix))
                .unwrap_or_default();
            let covered: Vec<&str> = manifest
                .map(|m| {
                    m.saved()
                        .map(|v| v.name.as_str())
                        .filter(|n| lost.iter().any(|l| l == n))
                        .collect()
                })
                .unwrap_or_default();
            if covered.is_empty() {
                format!(
                    "Checkpoint {} ({age}) in {shown} holds none of them.",
                    entry.name
                )
            } else {
                format!(
                    "Checkpoint {} ({age}) has {}: `%checkpoint restore` brings them back.",
                    entry.name,
                    covered.join(", ")
                )
            }
        }
        None => format!(
            "No checkpoint in {shown}: `%checkpoint save` (or `%checkpoint auto --every 10m`) would have kept them."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ages_and_tables_read_well() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000), "1.5 MB");
        assert_eq!(human_age(42.0), "42s ago");
        assert_eq!(human_age(7200.0 + 300.0), "2h 5m ago");
        assert_eq!(utc_time(0.0), "1970-01-01 00:00:00Z");
        let bundle = table(&["a", "bb"], &[vec!["<x>".into(), "y".into()]], "cap");
        assert_eq!(bundle["text/plain"], "cap\na    bb\n---  --\n<x>  y");
        assert!(bundle["text/html"].as_str().unwrap().contains("&lt;x&gt;"));
    }
}
