//! ferrolab's one way to show a table and a size.
//!
//! A [`Table`] renders as `text/plain` (an optional caption line, the column
//! titles, a rule of dashes, rows aligned left or right, an optional footer:
//! the layout of the official Kaggle CLI) and as `text/html` (the same cells,
//! escaped, with links where a cell has one), together in one MIME bundle.
//! Every user-supplied text is escaped for HTML by [`escape`]; sizes are
//! written one way everywhere by [`size`] (decimal units: `61.2 kB`, `1.5 MB`).

use serde_json::{Map, Value};

/// A Jupyter MIME bundle: MIME type → content (the same shape as the
/// kernel's `display_data`).
pub type MimeBundle = Map<String, Value>;

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

#[derive(Default)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// A line above the table (what it lists, and where).
    pub caption: Option<String>,
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
        let mut text = self
            .caption
            .as_ref()
            .map(|caption| format!("{caption}\n"))
            .unwrap_or_default();
        text.push_str(&line(self.columns.iter().map(|c| c.title).collect()));
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
        let mut html = self
            .caption
            .as_ref()
            .map(|caption| format!("<p>{}</p>", escape(caption)))
            .unwrap_or_default();
        html.push_str("<table><thead><tr>");
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

/// `1234567` → `1.2 MB`: decimal units with one decimal (bytesize's SI form),
/// the one spelling of a size in ferrolab (downloads, listings, checkpoints).
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().si().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            columns: vec![left("name"), right("size")],
            rows: vec![
                vec![linked("train.csv", "https://x/train"), size(61194).into()],
                vec!["<b>".into(), size(12).into()],
            ],
            caption: None,
            footer: Some("2 files".into()),
        }
    }

    #[test]
    fn text_aligns_columns_under_a_rule() {
        assert_eq!(
            sample().text(),
            "name          size\n---------  -------\ntrain.csv  61.2 kB\n<b>           12 B\n2 files"
        );
    }

    #[test]
    fn html_links_escapes_and_keeps_caption_and_footer_outside_the_table() {
        let table = Table {
            caption: Some("Files in \"x\" & y".into()),
            ..sample()
        };
        let html = table.html();
        assert!(
            html.starts_with("<p>Files in &quot;x&quot; &amp; y</p><table>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"https://x/train\" target=\"_blank\">train.csv</a>"));
        assert!(html.contains("&lt;b&gt;"));
        assert!(html.ends_with("</table><p>2 files</p>"));
        assert!(table.text().starts_with("Files in \"x\" & y\nname"));
        let bundle = table.bundle();
        assert_eq!(bundle["text/plain"], table.text());
        assert_eq!(bundle["text/html"], html);
    }

    #[test]
    fn sizes_have_one_spelling() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_500_000), "1.5 MB");
        assert_eq!(size(1_073_741_824), "1.1 GB");
    }
}
