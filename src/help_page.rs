//! The README as an HTML page installed beside kernel.json, so the kernel's
//! `help_links` open the manual from the Jupyter server itself
//! (`/kernelspecs/<name>/help.html#magics`) — no network, always the
//! version that is installed. Headings get GitHub-style ids for the anchors.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd, html};

const README: &str = include_str!("../README.md");

/// GitHub's anchor for a heading: lowercase, spaces to `-`, punctuation dropped.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// Renders markdown to a standalone HTML page with heading anchors.
pub fn render(markdown: &str) -> String {
    let events: Vec<Event> = Parser::new_ext(markdown, Options::ENABLE_TABLES).collect();
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    let mut index = 0;
    while index < events.len() {
        if let Event::Start(Tag::Heading { level, .. }) = &events[index] {
            let level = level_number(*level);
            let end = events[index..]
                .iter()
                .position(|event| matches!(event, Event::End(TagEnd::Heading(_))))
                .map_or(events.len(), |offset| index + offset);
            let inner = &events[index + 1..end];
            let text: String = inner
                .iter()
                .filter_map(|event| match event {
                    Event::Text(text) | Event::Code(text) => Some(text.as_ref()),
                    _ => None,
                })
                .collect();
            let mut body = String::new();
            html::push_html(&mut body, inner.iter().cloned());
            out.push(Event::Html(
                format!("<h{level} id=\"{}\">{body}</h{level}>\n", slug(&text)).into(),
            ));
            index = end + 1;
            continue;
        }
        out.push(events[index].clone());
        index += 1;
    }
    let mut body = String::new();
    html::push_html(&mut body, out.into_iter());
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ferrolab manual</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
         code,pre{{background:#f4f4f4}}pre{{padding:.6rem;overflow:auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.2rem .5rem}}</style></head><body>\n{body}</body></html>\n"
    )
}

/// The installed manual (the README this binary was built with).
pub fn manual() -> String {
    render(README)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_match_github() {
        assert_eq!(slug("Magics"), "magics");
        assert_eq!(
            slug("GPU VMs and CUDA from Rust"),
            "gpu-vms-and-cuda-from-rust"
        );
        assert_eq!(slug("Shell — `!cmd`, `!!cmd`"), "shell--cmd-cmd");
    }

    #[test]
    fn headings_get_ids_and_tables_render() {
        let page = render("## Magics\n\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(page.contains("<h2 id=\"magics\">Magics</h2>"), "{page}");
        assert!(page.contains("<table>"), "{page}");
    }

    #[test]
    fn the_manual_has_the_sections_help_links_point_at() {
        let page = manual();
        for id in [
            "magics",
            "troubleshooting",
            "writing-rust-in-cells",
            "configuration",
        ] {
            assert!(page.contains(&format!("id=\"{id}\"")), "no #{id}");
        }
    }
}
