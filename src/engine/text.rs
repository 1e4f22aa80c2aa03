//! Text helpers: incremental UTF-8 decoding of output bytes, and conversion
//! between Jupyter cursor positions (Unicode code points) and byte offsets.

/// Decodes a byte stream that may split characters between chunks.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes what can be decoded; an incomplete character at the end waits
    /// for the next chunk, invalid bytes become U+FFFD.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    // SAFETY-free: `valid` was just checked by from_utf8.
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match error.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        text
    }

    /// Whatever is left (an incomplete character) as replacement characters.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// Byte offset of the `cursor`-th code point (clamped to the end).
pub fn byte_offset(text: &str, cursor: usize) -> usize {
    text.char_indices()
        .nth(cursor)
        .map_or(text.len(), |(offset, _)| offset)
}

/// Code point index of a byte offset (clamped; a mid-character offset counts
/// the character it is inside).
pub fn code_point_index(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.char_indices()
        .take_while(|(index, _)| *index < offset)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_joined() {
        let mut stream = Utf8Stream::default();
        let bytes = "héllo ✓".as_bytes();
        let mut text = String::new();
        for byte in bytes {
            text.push_str(&stream.decode(&[*byte]));
        }
        assert_eq!(text, "héllo ✓");
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.decode(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(stream.decode(b"\xe2\x9c"), "");
        assert_eq!(stream.finish(), "\u{fffd}");
    }

    #[test]
    fn cursor_conversions_count_code_points() {
        let text = "let é = \"✓\";";
        assert_eq!(byte_offset(text, 4), 4);
        assert_eq!(byte_offset(text, 5), 6);
        assert_eq!(byte_offset(text, 100), text.len());
        assert_eq!(code_point_index(text, 6), 5);
        assert_eq!(code_point_index(text, text.len()), text.chars().count());
        // An emoji outside the BMP is one code point (not two UTF-16 units).
        let emoji = "😀x";
        assert_eq!(byte_offset(emoji, 1), 4);
        assert_eq!(code_point_index(emoji, 4), 1);
    }
}
