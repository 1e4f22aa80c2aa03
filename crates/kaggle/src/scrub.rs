//! The last line of defence for secrets in `%kaggle`'s output: our own
//! messages never include a key or token, but a server may echo one back,
//! and a hostile one may disguise it.
//!
//! [`scrub`] replaces each secret by `***` wherever the text holds it —
//! as it is, percent-encoded (`%6B%33…`, wholly or in part), in another case,
//! or with whitespace inside — and likewise its base64 forms (standard and
//! URL-safe, padded or not: the Basic header's `user:key`). Matching runs on a
//! normalised view of the text (percent escapes decoded, whitespace dropped,
//! ASCII lower-cased) that remembers where each byte came from, so the whole
//! disguised span is replaced and the rest of the text is left as it was.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

const MASK: &str = "***";

/// Shorter secrets (and base64 forms) are not searched for: they would
/// match ordinary text.
const MIN_SECRET: usize = 4;
const MIN_ENCODED: usize = 8;

/// `text` normalised, with the byte range of the original each byte came from.
fn normalise(text: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut bytes = Vec::with_capacity(text.len());
    let mut spans = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let (byte, width) = match text.get(at..at + 3) {
            Some([b'%', high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                let hex = [*high, *low];
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .unwrap_or(b'%');
                (value, 3)
            }
            _ => (text[at], 1),
        };
        if !byte.is_ascii_whitespace() {
            bytes.push(byte.to_ascii_lowercase());
            spans.push((at, at + width));
        }
        at += width;
    }
    (bytes, spans)
}

/// The normalised forms to look for: each secret and its base64 encodings.
fn needles(secrets: &[String]) -> Vec<Vec<u8>> {
    let mut needles = Vec::new();
    for secret in secrets {
        let plain = normalise(secret.as_bytes()).0;
        if plain.len() >= MIN_SECRET {
            needles.push(plain);
        }
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            let encoded = normalise(engine.encode(secret).as_bytes()).0;
            if encoded.len() >= MIN_ENCODED {
                needles.push(encoded);
            }
        }
    }
    needles.sort();
    needles.dedup();
    needles
}

/// Replaces every secret in `text`, in any of the forms above, by `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let needles = needles(secrets);
    if needles.is_empty() {
        return text.to_owned();
    }
    let (haystack, spans) = normalise(text.as_bytes());
    // Original byte ranges to mask.
    let mut masked: Vec<(usize, usize)> = Vec::new();
    for needle in &needles {
        let mut from = 0;
        while from + needle.len() <= haystack.len() {
            let Some(found) = haystack[from..]
                .windows(needle.len())
                .position(|window| window == needle.as_slice())
            else {
                break;
            };
            let start = from + found;
            let end = start + needle.len();
            masked.push((spans[start].0, spans[end - 1].1));
            from = end;
        }
    }
    if masked.is_empty() {
        return text.to_owned();
    }
    masked.sort();
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in masked {
        if end <= at {
            continue;
        }
        out.extend_from_slice(&text.as_bytes()[at..start.max(at)]);
        if start >= at {
            out.extend_from_slice(MASK.as_bytes());
        }
        at = end;
    }
    out.extend_from_slice(&text.as_bytes()[at..]);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k3y-That+Must/Stay=Secret";

    fn percent_all(text: &str) -> String {
        text.bytes().map(|byte| format!("%{byte:02X}")).collect()
    }

    fn percent_reserved(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '~' => c.to_string(),
                c => format!("%{:02X}", c as u32),
            })
            .collect()
    }

    fn spaced(text: &str) -> String {
        text.chars()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn echoed_forms_are_all_scrubbed() {
        let basic = STANDARD.encode(format!("alice:{KEY}"));
        let secrets = vec![KEY.to_owned(), format!("alice:{KEY}")];
        let table: Vec<(&str, String)> = vec![
            ("as is", KEY.to_owned()),
            ("upper-cased", KEY.to_uppercase()),
            ("lower-cased", KEY.to_lowercase()),
            ("percent-encoded reserved", percent_reserved(KEY)),
            ("percent-encoded wholly", percent_all(KEY)),
            ("percent-encoded lower hex", percent_all(KEY).to_lowercase()),
            ("spaced", spaced(KEY)),
            (
                "split by a newline",
                format!("{}\n{}", &KEY[..8], &KEY[8..]),
            ),
            ("spaced and upper-cased", spaced(&KEY.to_uppercase())),
            ("basic header", basic.clone()),
            ("basic header upper-cased", basic.to_uppercase()),
            ("basic header url-encoded", percent_reserved(&basic)),
            (
                "basic header url-safe",
                URL_SAFE_NO_PAD.encode(format!("alice:{KEY}")),
            ),
            ("key alone in base64", STANDARD.encode(KEY)),
        ];
        for (form, echoed) in table {
            let text = format!("401: bad credentials [{echoed}] from 10.0.0.1");
            let clean = scrub(&text, &secrets);
            assert_eq!(clean, "401: bad credentials [***] from 10.0.0.1", "{form}");
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        let secrets = vec![KEY.to_owned()];
        for text in [
            "nothing secret here: 100% sure, %zz, a b c",
            "Ünïcödé and emoji 🚀 stay",
            "",
        ] {
            assert_eq!(scrub(text, &secrets), text);
        }
        assert_eq!(scrub("ab key ab", &["ab".to_owned()]), "ab key ab");
        assert_eq!(
            scrub("🚀 k3y-that+must/stay=secret 🚀", &secrets),
            "🚀 *** 🚀"
        );
    }
}
