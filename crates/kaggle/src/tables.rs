//! The listing commands' values as table cells (the tables themselves are
//! `ferrolab-tables`, re-exported here): sizes, dates (UTC), statuses as plain
//! words (`COMPLETE`, not `SubmissionStatus.COMPLETE`) and scores.

use crate::client::as_u64;
use serde_json::Value;

pub use ferrolab_tables::{Cell, Column, MimeBundle, Table, escape, left, linked, right, size};

/// The array under `key` in an API answer; empty when the field is absent
/// (the API leaves out empty lists).
pub fn items<'a>(answer: &'a Value, key: &str) -> &'a [Value] {
    answer
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
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
