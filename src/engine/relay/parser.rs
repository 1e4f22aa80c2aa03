//! Splits what the child process writes to fd 1 or fd 2 into three kinds.
//!
//! - **Parent lines**: from `EVCXR_` to the end of the line, and every line
//!   between `EVCXR_BEGIN_CONTENT` and `EVCXR_END_CONTENT`. These are evcxr's own
//!   protocol and go to the evcxr parent unchanged (stdout only). The marker is
//!   found mid-line too: user text without a newline that was flushed just
//!   before evcxr's marker must not hide the marker (that would hang the cell).
//!   Text wrongly taken for a marker is not lost: evcxr passes lines it does
//!   not know to its own stdout channel, which the kernel shows.
//! - **Envelopes**: `ESC _ ferrolab;<kind>;<length> ESC \` followed by exactly
//!   `length` payload bytes, anywhere in the stream. ferrolab's prelude uses them
//!   for rich display and panic reports.
//! - **User bytes**: everything else, passed on as soon as it is known not to be
//!   one of the above, partial lines included.
//!
//! Bytes that might still become a marker are held; [`OutputParser::release`]
//! gives them up as user bytes (called on a timer and at the end of a run).

use crate::engine::evcxr_contract;

/// The byte sequence that opens an envelope.
pub const ENVELOPE_PREFIX: &[u8] = b"\x1b_ferrolab;";
/// What an evcxr protocol line starts with.
pub const PARENT_PREFIX: &[u8] = evcxr_contract::PROTOCOL_PREFIX;
const MAX_ENVELOPE_HEADER: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    User(Vec<u8>),
    /// A whole line for the evcxr parent, newline included.
    ParentLine(Vec<u8>),
    Envelope {
        kind: String,
        payload: Vec<u8>,
    },
}

#[derive(Debug)]
enum State {
    /// Plain user text.
    Text,
    /// Collecting bytes that match `EVCXR_` so far.
    MaybeParent(Vec<u8>),
    /// Inside a parent line (or any line of a content block).
    ParentLine(Vec<u8>),
    /// Collecting bytes that match the envelope prefix so far.
    MaybeEnvelope(Vec<u8>),
    /// After the prefix: `kind;length`, terminated by `ESC \`.
    EnvelopeHeader(Vec<u8>),
    EnvelopePayload {
        kind: String,
        remaining: usize,
        payload: Vec<u8>,
    },
}

#[derive(Debug)]
pub struct OutputParser {
    detect_parent_lines: bool,
    state: State,
    in_content_block: bool,
    user: Vec<u8>,
}

impl OutputParser {
    /// `detect_parent_lines` is true for stdout, false for stderr.
    pub fn new(detect_parent_lines: bool) -> Self {
        OutputParser {
            detect_parent_lines,
            state: State::Text,
            in_content_block: false,
            user: Vec::new(),
        }
    }

    /// True while bytes are held back undecided.
    pub fn holds_bytes(&self) -> bool {
        matches!(
            self.state,
            State::MaybeParent(_) | State::MaybeEnvelope(_) | State::EnvelopeHeader(_)
        ) || matches!(&self.state, State::ParentLine(line) if !line.is_empty() && !self.in_content_block)
    }

    pub fn feed(&mut self, input: &[u8], events: &mut Vec<Event>) {
        let mut index = 0;
        while index < input.len() {
            index += self.step(&input[index..], events);
        }
        self.flush_user(events);
    }

    /// Gives up held, undecided bytes as user output.
    pub fn release(&mut self, events: &mut Vec<Event>) {
        let state = std::mem::replace(&mut self.state, State::Text);
        match state {
            State::MaybeParent(held) | State::MaybeEnvelope(held) => self.push_user(&held),
            State::ParentLine(line) if !self.in_content_block => self.push_user(&line),
            State::EnvelopeHeader(header) => {
                self.push_user(ENVELOPE_PREFIX);
                self.push_user(&header);
            }
            other => self.state = other,
        }
        self.flush_user(events);
    }

    /// Consumes some bytes from the front of `input`; returns how many.
    fn step(&mut self, input: &[u8], events: &mut Vec<Event>) -> usize {
        let state = std::mem::replace(&mut self.state, State::Text);
        match state {
            State::Text => {
                if self.in_content_block {
                    self.state = State::ParentLine(Vec::new());
                    return 0;
                }
                // Plain text up to the next byte that could start something.
                let stop = input
                    .iter()
                    .position(|&b| b == 0x1b || (b == PARENT_PREFIX[0] && self.detect_parent_lines))
                    .unwrap_or(input.len());
                if stop > 0 {
                    self.push_user(&input[..stop]);
                    return stop;
                }
                self.state = if input[0] == 0x1b {
                    State::MaybeEnvelope(vec![0x1b])
                } else {
                    State::MaybeParent(vec![input[0]])
                };
                1
            }
            State::MaybeParent(mut held) => {
                let byte = input[0];
                if PARENT_PREFIX.get(held.len()) == Some(&byte) {
                    held.push(byte);
                    self.state = if held.len() == PARENT_PREFIX.len() {
                        self.flush_user(events);
                        State::ParentLine(held)
                    } else {
                        State::MaybeParent(held)
                    };
                    1
                } else {
                    // Not a parent line: the held bytes are user text. Re-read
                    // `byte` unless it starts another marker candidate.
                    self.push_user(&held);
                    self.state = State::Text;
                    if byte == PARENT_PREFIX[0] {
                        self.state = State::MaybeParent(vec![byte]);
                        return 1;
                    }
                    0
                }
            }
            State::ParentLine(mut line) => match input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&input[..=end]);
                    self.flush_user(events);
                    self.finish_parent_line(&line);
                    events.push(Event::ParentLine(line));
                    self.state = State::Text;
                    end + 1
                }
                None => {
                    line.extend_from_slice(input);
                    self.state = State::ParentLine(line);
                    input.len()
                }
            },
            State::MaybeEnvelope(mut held) => {
                let byte = input[0];
                if ENVELOPE_PREFIX.get(held.len()) == Some(&byte) {
                    held.push(byte);
                    self.state = if held.len() == ENVELOPE_PREFIX.len() {
                        State::EnvelopeHeader(Vec::new())
                    } else {
                        State::MaybeEnvelope(held)
                    };
                    1
                } else {
                    // An ordinary escape sequence (colours...): pass it on.
                    self.push_user(&held);
                    self.state = State::Text;
                    if byte == 0x1b {
                        self.state = State::MaybeEnvelope(vec![0x1b]);
                        return 1;
                    }
                    0
                }
            }
            State::EnvelopeHeader(mut header) => {
                header.push(input[0]);
                if header.ends_with(b"\x1b\\") {
                    let text = &header[..header.len() - 2];
                    match parse_header(text) {
                        Some((kind, 0)) => {
                            self.flush_user(events);
                            events.push(Event::Envelope {
                                kind,
                                payload: Vec::new(),
                            });
                            self.state = State::Text;
                        }
                        Some((kind, remaining)) => {
                            self.state = State::EnvelopePayload {
                                kind,
                                remaining,
                                payload: Vec::with_capacity(remaining.min(1 << 20)),
                            };
                        }
                        None => {
                            self.push_user(ENVELOPE_PREFIX);
                            self.push_user(&header);
                            self.state = State::Text;
                        }
                    }
                } else if header.len() > MAX_ENVELOPE_HEADER {
                    self.push_user(ENVELOPE_PREFIX);
                    self.push_user(&header);
                    self.state = State::Text;
                } else {
                    self.state = State::EnvelopeHeader(header);
                }
                1
            }
            State::EnvelopePayload {
                kind,
                remaining,
                mut payload,
            } => {
                let take = remaining.min(input.len());
                payload.extend_from_slice(&input[..take]);
                if take == remaining {
                    self.flush_user(events);
                    events.push(Event::Envelope { kind, payload });
                    self.state = State::Text;
                } else {
                    self.state = State::EnvelopePayload {
                        kind,
                        remaining: remaining - take,
                        payload,
                    };
                }
                take
            }
        }
    }

    fn finish_parent_line(&mut self, line: &[u8]) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if self.in_content_block {
            // The run's end closes a block the cell never ended, so the next
            // run's output is not taken for its content.
            if text == evcxr_contract::END_CONTENT
                || text == evcxr_contract::PANIC_NOTIFICATION
                || line == evcxr_contract::EXECUTION_COMPLETE
            {
                self.in_content_block = false;
            }
        } else if text.starts_with(evcxr_contract::BEGIN_CONTENT) {
            self.in_content_block = true;
        }
    }

    fn push_user(&mut self, bytes: &[u8]) {
        self.user.extend_from_slice(bytes);
    }

    fn flush_user(&mut self, events: &mut Vec<Event>) {
        if !self.user.is_empty() {
            events.push(Event::User(std::mem::take(&mut self.user)));
        }
    }
}

fn parse_header(text: &[u8]) -> Option<(String, usize)> {
    let text = std::str::from_utf8(text).ok()?;
    let (kind, length) = text.split_once(';')?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some((kind.to_owned(), length.parse().ok()?))
}

/// Builds an envelope (used by tests and by the kernel's own prelude checks).
pub fn envelope(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ENVELOPE_PREFIX.to_vec();
    bytes.extend_from_slice(format!("{kind};{}\x1b\\", payload.len()).as_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(parser: &mut OutputParser, chunks: &[&[u8]]) -> Vec<Event> {
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut events);
        }
        merge_user(events)
    }

    /// Adjacent user events are one logical stream; merge them for comparison.
    fn merge_user(events: Vec<Event>) -> Vec<Event> {
        let mut merged: Vec<Event> = Vec::new();
        for event in events {
            match (merged.last_mut(), event) {
                (Some(Event::User(previous)), Event::User(next)) => previous.extend(next),
                (_, event) => merged.push(event),
            }
        }
        merged
    }

    fn user(text: &str) -> Event {
        Event::User(text.as_bytes().to_vec())
    }

    fn parent(text: &str) -> Event {
        Event::ParentLine(text.as_bytes().to_vec())
    }

    #[test]
    fn plain_text_and_partial_lines_pass_through() {
        let mut parser = OutputParser::new(true);
        let events = run(&mut parser, &[b"hello\nprogress 10%\r", b"progress 20%"]);
        assert_eq!(events, vec![user("hello\nprogress 10%\rprogress 20%")]);
        assert!(!parser.holds_bytes());
    }

    #[test]
    fn evcxr_lines_go_to_the_parent_in_order() {
        let mut parser = OutputParser::new(true);
        let events = run(&mut parser, &[b"a\nEVCXR_EXECUTION_COMPLETE\nb\n"]);
        assert_eq!(
            events,
            vec![
                user("a\n"),
                parent("EVCXR_EXECUTION_COMPLETE\n"),
                user("b\n")
            ]
        );
    }

    #[test]
    fn marker_split_across_reads() {
        let mut parser = OutputParser::new(true);
        let events = run(&mut parser, &[b"x\nEVC", b"XR_EXECUTION", b"_COMPLETE\n"]);
        assert_eq!(
            events,
            vec![user("x\n"), parent("EVCXR_EXECUTION_COMPLETE\n")]
        );
    }

    #[test]
    fn marker_after_a_flushed_partial_line_is_still_found() {
        let mut parser = OutputParser::new(true);
        let events = run(&mut parser, &[b"\r42%", b"EVCXR_EXECUTION_COMPLETE\n"]);
        assert_eq!(
            events,
            vec![user("\r42%"), parent("EVCXR_EXECUTION_COMPLETE\n")]
        );
        let together = run(&mut parser, &[b"partialEVCXR_EXECUTION_COMPLETE\n"]);
        assert_eq!(
            together,
            vec![user("partial"), parent("EVCXR_EXECUTION_COMPLETE\n")]
        );
    }

    #[test]
    fn near_miss_prefixes_are_user_output() {
        let mut parser = OutputParser::new(true);
        let events = run(&mut parser, &[b"EVCX! Error: EEVCXR? E\nEnd\n"]);
        assert_eq!(events, vec![user("EVCX! Error: EEVCXR? E\nEnd\n")]);
    }

    #[test]
    fn envelope_then_content_block() {
        let mut parser = OutputParser::new(true);
        let mut input = envelope("display", b"{}");
        input.extend_from_slice(
            b"EVCXR_BEGIN_CONTENT text/plain\n()\nEVCXR_END_CONTENT\nEVCXR_EXECUTION_COMPLETE\n",
        );
        let events = run(&mut parser, &[&input]);
        assert_eq!(
            events,
            vec![
                Event::Envelope {
                    kind: "display".into(),
                    payload: b"{}".to_vec()
                },
                parent("EVCXR_BEGIN_CONTENT text/plain\n"),
                parent("()\n"),
                parent("EVCXR_END_CONTENT\n"),
                parent("EVCXR_EXECUTION_COMPLETE\n"),
            ]
        );
    }

    #[test]
    fn content_blocks_go_to_the_parent_whole() {
        let mut parser = OutputParser::new(true);
        let block =
            b"EVCXR_BEGIN_CONTENT text/html\n<b>hi</b>\nplain line\nEVCXR_END_CONTENT\nafter\n";
        let events = run(&mut parser, &[block]);
        assert_eq!(
            events,
            vec![
                parent("EVCXR_BEGIN_CONTENT text/html\n"),
                parent("<b>hi</b>\n"),
                parent("plain line\n"),
                parent("EVCXR_END_CONTENT\n"),
                user("after\n"),
            ]
        );
    }

    #[test]
    fn the_end_of_a_run_closes_a_block_the_cell_never_ended() {
        let mut parser = OutputParser::new(true);
        let mut input =
            b"EVCXR_BEGIN_CONTENT text/html\n<b>half\nEVCXR_EXECUTION_COMPLETE\n".to_vec();
        input.extend_from_slice(&envelope("live", b""));
        input.extend_from_slice(b"next run\n");
        let events = run(&mut parser, &[&input]);
        assert_eq!(
            events,
            vec![
                parent("EVCXR_BEGIN_CONTENT text/html\n"),
                parent("<b>half\n"),
                parent("EVCXR_EXECUTION_COMPLETE\n"),
                Event::Envelope {
                    kind: "live".into(),
                    payload: Vec::new()
                },
                user("next run\n"),
            ]
        );
    }

    #[test]
    fn held_prefix_is_released_on_demand() {
        let mut parser = OutputParser::new(true);
        let mut events = run(&mut parser, &[b"EVC"]);
        assert!(events.is_empty());
        assert!(parser.holds_bytes());
        parser.release(&mut events);
        assert_eq!(events, vec![user("EVC")]);
        let more = run(&mut parser, &[b"X\n"]);
        assert_eq!(more, vec![user("X\n")]);
    }

    #[test]
    fn envelopes_are_found_anywhere_even_split() {
        let mut parser = OutputParser::new(true);
        let env = envelope("display", b"{\"data\":{}}");
        let (first, second) = env.split_at(7);
        let events = run(&mut parser, &[b"before ", first, second, b" after"]);
        assert_eq!(
            events,
            vec![
                user("before "),
                Event::Envelope {
                    kind: "display".into(),
                    payload: b"{\"data\":{}}".to_vec()
                },
                user(" after"),
            ]
        );
    }

    #[test]
    fn envelope_payload_may_contain_newlines_and_escapes() {
        let mut parser = OutputParser::new(true);
        let payload = b"line1\nEVCXR_EXECUTION_COMPLETE\n\x1b_ferrolab;x;1\x1b\\";
        let events = run(&mut parser, &[&envelope("panic", payload)]);
        assert_eq!(
            events,
            vec![Event::Envelope {
                kind: "panic".into(),
                payload: payload.to_vec()
            }]
        );
    }

    #[test]
    fn ansi_colours_pass_through() {
        let mut parser = OutputParser::new(false);
        let text = b"\x1b[31mred\x1b[0m \x1b\x1b[1mbold\x1b[0m";
        let events = run(&mut parser, &[text]);
        assert_eq!(events, vec![Event::User(text.to_vec())]);
    }

    #[test]
    fn malformed_envelope_header_is_user_output() {
        let mut parser = OutputParser::new(false);
        let text = b"\x1b_ferrolab;bad kind;x\x1b\\rest";
        let events = run(&mut parser, &[text]);
        assert_eq!(events, vec![Event::User(text.to_vec())]);
    }

    #[test]
    fn stderr_parser_does_not_treat_evcxr_lines_specially() {
        let mut parser = OutputParser::new(false);
        let events = run(&mut parser, &[b"EVCXR_EXECUTION_COMPLETE\n"]);
        assert_eq!(events, vec![user("EVCXR_EXECUTION_COMPLETE\n")]);
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input: Vec<u8> = [
            b"out\nEVCXR_BEGIN_CONTENT text/plain\n42\nEVCXR_END_CONTENT\n".as_slice(),
            &envelope("display", b"{}"),
            b"tail\x1b[0m\nEVCXR_EXECUTION_COMPLETE\n",
        ]
        .concat();
        let mut whole = OutputParser::new(true);
        let expected = run(&mut whole, &[&input]);
        let mut bytewise = OutputParser::new(true);
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&mut bytewise, &chunks), expected);
    }
}
