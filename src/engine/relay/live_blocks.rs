//! Rich content printed while a cell runs becomes a display at once.
//!
//! The Rust ecosystem's display crates (plotters' `evcxr_figure`, evcxr_image,
//! anything printing `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT`) print
//! a content block from inside the running cell. evcxr keeps only the last
//! block of a run and shows it as the cell's value at the end; here every
//! block of a *live* run goes to the kernel as a display the moment its end
//! marker arrives, in order with the text around it.
//!
//! A run is live when the cell announced it (the prelude's `__live_displays`,
//! which the engine adds when the cell's value, if any, is shown through
//! `__value_follows`). After that marker the blocks are the value and go to
//! evcxr as before, so the value stays the one `execute_result`. A run that
//! did not announce itself (evcxr shows its value its own way) passes every
//! block to evcxr unchanged.
//!
//! Invariants: no byte is swallowed — a block with no MIME type, or cut off
//! by the end of the run or a panic, comes out as text with a note; the
//! parent still sees every protocol line that is not part of a block shown.

use crate::engine::evcxr_contract;

/// What to do with one line (or a finished block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Pass this line to the evcxr parent.
    Parent(Vec<u8>),
    /// Show this content now.
    Display { mime: String, data: String },
    /// Show these bytes as the cell's stdout.
    Text(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct LiveBlocks {
    live: bool,
    value_follows: bool,
    /// The lines of the block being collected, its begin line first.
    held: Option<Vec<Vec<u8>>>,
}

impl LiveBlocks {
    /// A run starts: not live until the cell says so.
    pub fn start_run(&mut self) {
        *self = LiveBlocks::default();
    }

    /// The cell announced that its blocks are displays.
    pub fn set_live(&mut self) {
        self.live = true;
    }

    /// The cell's value follows: its block goes to evcxr.
    pub fn value_follows(&mut self) {
        self.value_follows = true;
    }

    /// One whole protocol line from the runtime's stdout (newline included).
    pub fn line(&mut self, line: Vec<u8>) -> Vec<Outcome> {
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let Some(mut held) = self.held.take() else {
            if self.live && !self.value_follows && text.starts_with(evcxr_contract::BEGIN_CONTENT) {
                self.held = Some(vec![line]);
                return Vec::new();
            }
            if line == evcxr_contract::EXECUTION_COMPLETE {
                self.live = false;
            }
            return vec![Outcome::Parent(line)];
        };
        if text == evcxr_contract::END_CONTENT {
            return vec![finish(held, line)];
        }
        if line == evcxr_contract::EXECUTION_COMPLETE
            || text.starts_with(evcxr_contract::PANIC_NOTIFICATION)
        {
            let mut out = vec![cut_off(held)];
            out.extend(self.line(line));
            return out;
        }
        held.push(line);
        self.held = Some(held);
        Vec::new()
    }
}

/// A complete block: a display, or text with a note if it names no MIME type.
fn finish(held: Vec<Vec<u8>>, end: Vec<u8>) -> Outcome {
    let begin = String::from_utf8_lossy(&held[0]);
    let mime = begin[evcxr_contract::BEGIN_CONTENT.len()..]
        .trim()
        .to_owned();
    let valid = mime.split_once('/').is_some_and(|(kind, sub)| {
        !kind.is_empty() && !sub.is_empty() && !mime.contains(char::is_whitespace)
    });
    if !valid {
        let mut text = held.concat();
        text.extend_from_slice(&end);
        text.extend_from_slice(
            b"ferrolab: the block above names no MIME type (EVCXR_BEGIN_CONTENT type/subtype), so it is shown as text\n",
        );
        return Outcome::Text(text);
    }
    let body = held[1..].concat();
    let body = body.strip_suffix(b"\n").unwrap_or(&body);
    Outcome::Display {
        mime,
        data: String::from_utf8_lossy(body).into_owned(),
    }
}

/// A block that never got its end marker, shown as the text it was.
fn cut_off(held: Vec<Vec<u8>>) -> Outcome {
    let mut text = held.concat();
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(
        b"ferrolab: the block above has no EVCXR_END_CONTENT before the cell ended, so it is shown as text\n",
    );
    Outcome::Text(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(blocks: &mut LiveBlocks, text: &str) -> Vec<Outcome> {
        text.split_inclusive('\n')
            .flat_map(|line| blocks.line(line.as_bytes().to_vec()))
            .collect()
    }

    fn parent(text: &str) -> Outcome {
        Outcome::Parent(text.as_bytes().to_vec())
    }

    #[test]
    fn a_live_run_shows_each_block_when_it_ends() {
        let mut blocks = LiveBlocks::default();
        blocks.start_run();
        blocks.set_live();
        let out = feed(
            &mut blocks,
            "EVCXR_BEGIN_CONTENT text/html\n<b>step 0</b>\n<i>two lines</i>\nEVCXR_END_CONTENT\n\
             EVCXR_BEGIN_CONTENT image/png\naGVsbG8=\nEVCXR_END_CONTENT\n",
        );
        assert_eq!(
            out,
            vec![
                Outcome::Display {
                    mime: "text/html".into(),
                    data: "<b>step 0</b>\n<i>two lines</i>".into()
                },
                Outcome::Display {
                    mime: "image/png".into(),
                    data: "aGVsbG8=".into()
                },
            ]
        );
    }

    #[test]
    fn the_value_and_runs_that_did_not_announce_themselves_go_to_evcxr() {
        let block = "EVCXR_BEGIN_CONTENT text/plain\n42\nEVCXR_END_CONTENT\n";
        let whole = vec![
            parent("EVCXR_BEGIN_CONTENT text/plain\n"),
            parent("42\n"),
            parent("EVCXR_END_CONTENT\n"),
        ];
        let mut quiet = LiveBlocks::default();
        quiet.start_run();
        assert_eq!(feed(&mut quiet, block), whole);
        let mut live = LiveBlocks::default();
        live.start_run();
        live.set_live();
        live.value_follows();
        assert_eq!(feed(&mut live, block), whole);
    }

    #[test]
    fn a_block_cut_off_by_the_end_of_the_run_is_text_and_the_marker_still_passes() {
        let mut blocks = LiveBlocks::default();
        blocks.set_live();
        let out = feed(
            &mut blocks,
            "EVCXR_BEGIN_CONTENT text/html\n<b>half\nEVCXR_EXECUTION_COMPLETE\n",
        );
        assert_eq!(out.len(), 2);
        let Outcome::Text(text) = &out[0] else {
            panic!("{out:?}")
        };
        let text = String::from_utf8_lossy(text);
        assert!(text.starts_with("EVCXR_BEGIN_CONTENT text/html\n<b>half\n"));
        assert!(text.contains("no EVCXR_END_CONTENT"));
        assert_eq!(out[1], parent("EVCXR_EXECUTION_COMPLETE\n"));
        // The run is over: the next one starts quiet.
        assert_eq!(
            feed(&mut blocks, "EVCXR_BEGIN_CONTENT text/plain\n"),
            vec![parent("EVCXR_BEGIN_CONTENT text/plain\n")]
        );
    }

    #[test]
    fn a_panic_inside_a_block_keeps_its_notification() {
        let mut blocks = LiveBlocks::default();
        blocks.set_live();
        let out = feed(
            &mut blocks,
            "EVCXR_BEGIN_CONTENT text/plain\nx\nEVCXR_PANIC_NOTIFICATION\n",
        );
        assert!(matches!(&out[0], Outcome::Text(_)));
        assert_eq!(out[1], parent("EVCXR_PANIC_NOTIFICATION\n"));
    }

    #[test]
    fn a_block_without_a_mime_type_is_text_with_a_note() {
        let mut blocks = LiveBlocks::default();
        blocks.set_live();
        for begin in ["EVCXR_BEGIN_CONTENT\n", "EVCXR_BEGIN_CONTENT html\n"] {
            let out = feed(
                &mut blocks,
                &format!("{begin}<b>x</b>\nEVCXR_END_CONTENT\n"),
            );
            let [Outcome::Text(text)] = out.as_slice() else {
                panic!("{out:?}")
            };
            let text = String::from_utf8_lossy(text);
            assert!(text.starts_with(begin) && text.contains("<b>x</b>\nEVCXR_END_CONTENT\n"));
            assert!(text.contains("names no MIME type"));
        }
    }

    #[test]
    fn other_protocol_lines_pass_while_no_block_is_open() {
        let mut blocks = LiveBlocks::default();
        blocks.set_live();
        assert_eq!(
            feed(&mut blocks, "EVCXR_INPUT_REQUEST:name\n"),
            vec![parent("EVCXR_INPUT_REQUEST:name\n")]
        );
    }
}
