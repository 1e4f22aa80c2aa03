//! Tables for the listing commands, as `text/plain` (aligned columns, like the
//! official CLI) and `text/html` (links where there is a page), plus the
//! formatting of the values in them: sizes, dates (UTC), statuses as plain
//! words (`COMPLETE`, not `SubmissionStatus.COMPLETE`) and scores.

use crate::client::as_u64;
use serde_json::{Map, Value};

/// A Jupyter MIME bundle: MIME type → content (the same shape as the
/// kernel's `display_data`).
pub type MimeBundle = Map<String, Value>;

/// The array under `key` in an API answer; empty when the field is absent
/// (the API leaves out empty lists).
pub fn items<'a>(answer: &'a Value, key: &str) -> &'a [Value] {
    answer
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub struct Column {
    pub title: &'static str,
    pub right: bool,
}

pub const fn left(title: &'static str) -> Column {
    Column {
        title,
        right: false,
    }
}

pub const fn right(title: &'static str) -> Column {
    Column { title, right: true }
}

#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub text: String,
    pub link: Option<String>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, link: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell {
            text: text.to_owned(),
            link: None,
        }
    }
}

pub fn linked(text: impl Into<String>, link: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        link: Some(link.into()),
    }
}

pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// A line under the table (totals, the next page).
    pub footer: Option<String>,
}

impl Table {
    pub fn text(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(index))
                    .map(|cell| cell.text.chars().count())
                    .chain([column.title.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&self.columns)
                .zip(&widths)
                .map(|((cell, column), width)| {
                    if column.right {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut text = line(self.columns.iter().map(|c| c.title).collect());
        text.push('\n');
        let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        text.push_str(&dashes.join("  "));
        for row in &self.rows {
            text.push('\n');
            text.push_str(&line(row.iter().map(|cell| cell.text.as_str()).collect()));
        }
        if let Some(footer) = &self.footer {
            text.push('\n');
            text.push_str(footer);
        }
        text
    }

    pub fn html(&self) -> String {
        let mut html = String::from("<table><thead><tr>");
        for column in &self.columns {
            let align = if column.right {
                " style=\"text-align:right\""
            } else {
                ""
            };
            html.push_str(&format!("<th{align}>{}</th>", escape(column.title)));
        }
        html.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            html.push_str("<tr>");
            for (cell, column) in row.iter().zip(&self.columns) {
                let align = if column.right {
                    " style=\"text-align:right\""
                } else {
                    ""
                };
                let text = escape(&cell.text);
                match &cell.link {
                    Some(link) => html.push_str(&format!(
                        "<td{align}><a href=\"{}\" target=\"_blank\">{text}</a></td>",
                        escape(link)
                    )),
                    None => html.push_str(&format!("<td{align}>{text}</td>")),
                }
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table>");
        if let Some(footer) = &self.footer {
            html.push_str(&format!("<p>{}</p>", escape(footer)));
        }
        html
    }

    pub fn bundle(&self) -> MimeBundle {
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), Value::String(self.text()));
        data.insert("text/html".into(), Value::String(self.html()));
        data
    }
}

/// Text made safe inside HTML elements and double-quoted attributes.
pub fn escape(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

/// `1234567` → `1.2 MB` (decimal units, as download speeds are given).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// A string field (empty if missing or null).
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::Bool(flag)) => flag.to_string(),
        _ => String::new(),
    }
}

pub fn number(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(as_u64)
}

/// An ISO-8601 time (with or without fraction or `Z`) as `YYYY-MM-DD HH:MM`
/// UTC; anything unparsable as it came.
pub fn date(value: &Value, key: &str) -> String {
    let raw = text(value, key);
    format_date(&raw)
}

pub fn format_date(raw: &str) -> String {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(trimmed) {
        return parsed
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M")
            .to_string();
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(parsed) = chrono::NaiveDateTime::parse_from_str(trimmed, format) {
            return parsed.format("%Y-%m-%d %H:%M").to_string();
        }
    }
    trimmed.to_owned()
}

/// `SUBMISSION_STATUS_COMPLETE`, `SubmissionStatus.COMPLETE`, `complete` →
/// `COMPLETE`.
pub fn status_word(raw: &str) -> String {
    let upper = raw.trim().to_ascii_uppercase();
    let last = upper.rsplit('.').next().unwrap_or(&upper);
    last.trim_start_matches("SUBMISSION_STATUS_").to_owned()
}

/// A yes/no field.
pub fn yes_no(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::Bool(true)) => "yes".to_owned(),
        Some(Value::Bool(false)) | None | Some(Value::Null) => "no".to_owned(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_table_aligns_and_html_links_and_escapes() {
        let table = Table {
            columns: vec![left("name"), right("size")],
            rows: vec![
                vec![linked("train.csv", "https://x/train"), size(61194).into()],
                vec!["<b>".into(), size(12).into()],
            ],
            footer: Some("2 files".into()),
        };
        assert_eq!(
            table.text(),
            "name        size\n---------  -----\ntrain.csv  61 kB\n<b>         12 B\n2 files"
        );
        let html = table.html();
        assert!(html.contains("<a href=\"https://x/train\" target=\"_blank\">train.csv</a>"));
        assert!(html.contains("&lt;b&gt;"));
        assert!(html.ends_with("<p>2 files</p>"));
    }

    #[test]
    fn values_are_formatted_plainly() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_500_000), "1.5 MB");
        assert_eq!(size(1_073_741_824), "1.1 GB");
        let row = json!({"date": "2024-05-01T12:00:00.123Z", "plain": "2024-05-01T12:00:00", "n": "7", "f": false});
        assert_eq!(date(&row, "date"), "2024-05-01 12:00");
        assert_eq!(date(&row, "plain"), "2024-05-01 12:00");
        assert_eq!(date(&row, "missing"), "");
        assert_eq!(number(&row, "n"), Some(7));
        assert_eq!(yes_no(&row, "f"), "no");
        assert_eq!(status_word("SUBMISSION_STATUS_COMPLETE"), "COMPLETE");
        assert_eq!(status_word("SubmissionStatus.ERROR"), "ERROR");
        assert_eq!(status_word("pending"), "PENDING");
        assert_eq!(format_date("2024-05-01T14:00:00+02:00"), "2024-05-01 12:00");
    }
}
