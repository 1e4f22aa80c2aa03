//! What a download knows about the remote file and about its own progress.
//!
//! [`Remote`] is read from the storage response headers (size, `ETag`,
//! `Last-Modified`, `Accept-Ranges`, `x-goog-hash`). A [`Sidecar`] is the small
//! JSON file `NAME.part.json` beside `NAME.part`: the URL (without its signed
//! query), the validator for `If-Range`, the size, the expected hashes and the
//! byte ranges (segments) with how much of each is on disk. It is written
//! atomically and only ever under-states progress, so a resume never trusts
//! bytes that were not written.

use base64::Engine as _;
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// Facts about the remote file from a storage response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub ranges: bool,
    pub md5: Option<String>,
    pub crc32c: Option<String>,
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

impl Remote {
    /// From a `200` response (the whole file).
    pub fn from_headers(headers: &HeaderMap) -> Remote {
        let mut remote = Remote {
            size: header_text(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            etag: header_text(headers, header::ETAG),
            last_modified: header_text(headers, header::LAST_MODIFIED),
            ranges: header_text(headers, header::ACCEPT_RANGES)
                .is_some_and(|value| value.eq_ignore_ascii_case("bytes")),
            md5: None,
            crc32c: None,
        };
        for value in headers.get_all("x-goog-hash") {
            let Ok(value) = value.to_str() else { continue };
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("md5", hash)) => remote.md5 = Some(hash.trim().to_owned()),
                    Some(("crc32c", hash)) => remote.crc32c = Some(hash.trim().to_owned()),
                    _ => {}
                }
            }
        }
        remote
    }

    /// `ETag`, else `Last-Modified`: what `If-Range` sends.
    pub fn validator(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    pub fn modified(&self) -> Option<SystemTime> {
        self.last_modified
            .as_deref()
            .and_then(|text| httpdate::parse_http_date(text).ok())
    }
}

/// `Content-Range: bytes START-END/TOTAL` → (START, END, TOTAL).
pub fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let text = header_text(headers, header::CONTENT_RANGE)?;
    let spec = text.strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok(),
    ))
}

/// One byte range of the file: `[start, end)`, `have` bytes of it on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub start: u64,
    /// `u64::MAX` while the size is unknown.
    pub end: u64,
    pub have: u64,
}

impl Segment {
    /// How many bytes the range holds.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    pub fn done(&self) -> bool {
        self.end != u64::MAX && self.have >= self.size()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub size: Option<u64>,
    pub md5: Option<String>,
    pub crc32c: Option<String>,
    pub segments: Vec<Segment>,
}

/// Splits `size` bytes into ranges fetched at once: one below 16 MiB or
/// without range support, else 8 MiB or more each, at most 8.
pub fn plan(size: Option<u64>, ranges: bool) -> Vec<Segment> {
    const PARALLEL_FROM: u64 = 16 << 20;
    const MIN_PART: u64 = 8 << 20;
    match size {
        Some(size) if ranges && size >= PARALLEL_FROM => {
            let count = (size / MIN_PART).clamp(2, 8);
            let part = size.div_ceil(count);
            (0..count)
                .map(|i| Segment {
                    start: i * part,
                    end: ((i + 1) * part).min(size),
                    have: 0,
                })
                .filter(|segment| segment.start < segment.end)
                .collect()
        }
        Some(size) => vec![Segment {
            start: 0,
            end: size,
            have: 0,
        }],
        None => vec![Segment {
            start: 0,
            end: u64::MAX,
            have: 0,
        }],
    }
}

impl Sidecar {
    pub fn new(url: &str, remote: &Remote, segments: Vec<Segment>) -> Sidecar {
        Sidecar {
            url: crate::client::without_query(url),
            etag: remote.etag.clone(),
            last_modified: remote.last_modified.clone(),
            size: remote.size,
            md5: remote.md5.clone(),
            crc32c: remote.crc32c.clone(),
            segments,
        }
    }

    pub fn validator(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    pub fn have(&self) -> u64 {
        self.segments.iter().map(|segment| segment.have).sum()
    }

    /// Reads a sidecar, if it exists, parses and fits its `.part` file.
    pub fn load(path: &Path, part: &Path) -> Option<Sidecar> {
        let sidecar: Sidecar = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let length = fs::metadata(part).ok()?.len();
        let fits = sidecar.segments.iter().all(|segment| {
            segment.start <= segment.end
                && (segment.end == u64::MAX || segment.have <= segment.size())
                && segment.start + segment.have <= length
        });
        (fits && !sidecar.segments.is_empty() && sidecar.validator().is_some()).then_some(sidecar)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let temporary = path.with_extension("json.tmp");
        fs::write(&temporary, serde_json::to_vec(self).unwrap_or_default())?;
        fs::rename(&temporary, path)
    }
}

/// Checks a file against the hashes the server sent (CRC32C when given, as
/// it is much faster, else MD5), hashing the part that is already on disk
/// while the rest is still downloading.
pub struct Verifier {
    expected: Option<(&'static str, String)>,
    crc: u32,
    md5: md5::Md5,
    done: u64,
}

impl Verifier {
    pub fn new(md5: Option<&str>, crc32c: Option<&str>) -> Verifier {
        let expected = match (crc32c, md5) {
            (Some(crc), _) => Some(("CRC32C", crc.to_owned())),
            (None, Some(md5)) => Some(("MD5", md5.to_owned())),
            (None, None) => None,
        };
        Verifier {
            expected,
            crc: 0,
            md5: <md5::Md5 as md5::Digest>::new(),
            done: 0,
        }
    }

    /// Hashes the file from where it stopped up to byte `upto`, reading at
    /// most `budget` bytes now.
    pub fn advance(&mut self, file: &fs::File, upto: u64, budget: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some((kind, _)) = self.expected else {
            return Ok(());
        };
        let end = upto.min(self.done.saturating_add(budget));
        let mut buffer = vec![0u8; 1 << 20];
        while self.done < end {
            let want = ((end - self.done) as usize).min(buffer.len());
            let count = file.read_at(&mut buffer[..want], self.done)?;
            if count == 0 {
                break;
            }
            if kind == "CRC32C" {
                self.crc = crc32c::crc32c_append(self.crc, &buffer[..count]);
            } else {
                md5::Digest::update(&mut self.md5, &buffer[..count]);
            }
            self.done += count as u64;
        }
        Ok(())
    }

    /// Hashes the rest of the `total` bytes and compares; `Err` names what
    /// differs.
    pub fn finish(mut self, file: &fs::File, total: u64) -> Result<(), String> {
        let Some((kind, expected)) = self.expected.clone() else {
            return Ok(());
        };
        self.advance(file, total, u64::MAX)
            .map_err(|error| error.to_string())?;
        let engine = base64::engine::general_purpose::STANDARD;
        let actual = if kind == "CRC32C" {
            engine.encode(self.crc.to_be_bytes())
        } else {
            engine.encode(md5::Digest::finalize(self.md5))
        };
        if expected == actual {
            Ok(())
        } else {
            Err(format!(
                "its {kind} is {actual}, the server said {expected}"
            ))
        }
    }
}

/// Checks a whole file (see [`Verifier`]).
#[cfg(test)]
pub fn verify(path: &Path, md5: Option<&str>, crc32c: Option<&str>) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|error| error.to_string())?;
    let total = file.metadata().map_err(|error| error.to_string())?.len();
    Verifier::new(md5, crc32c).finish(&file, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_facts_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "1234".parse().unwrap());
        headers.insert(header::ETAG, "\"abc\"".parse().unwrap());
        headers.insert(
            header::LAST_MODIFIED,
            "Tue, 01 Oct 2024 10:00:00 GMT".parse().unwrap(),
        );
        headers.insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
        headers.append("x-goog-hash", "crc32c=AAAAAA==".parse().unwrap());
        headers.append(
            "x-goog-hash",
            "md5=1B2M2Y8AsgTpgAmY7PhCfg==".parse().unwrap(),
        );
        let remote = Remote::from_headers(&headers);
        assert_eq!(remote.size, Some(1234));
        assert_eq!(remote.validator(), Some("\"abc\""));
        assert!(remote.ranges);
        assert_eq!(remote.md5.as_deref(), Some("1B2M2Y8AsgTpgAmY7PhCfg=="));
        assert_eq!(remote.crc32c.as_deref(), Some("AAAAAA=="));
        assert_eq!(
            remote.modified(),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_727_776_800))
        );
        headers.insert(header::CONTENT_RANGE, "bytes 10-19/1234".parse().unwrap());
        assert_eq!(content_range(&headers), Some((10, 19, Some(1234))));
    }

    #[test]
    fn plans_parallel_ranges_only_for_large_ranged_files() {
        assert_eq!(plan(Some(100), true).len(), 1);
        assert_eq!(plan(Some(100 << 20), false).len(), 1);
        let parts = plan(Some((100 << 20) + 3), true);
        assert_eq!(parts.len(), 8);
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts.last().unwrap().end, (100 << 20) + 3);
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(plan(None, true)[0].end, u64::MAX);
    }

    #[test]
    fn sidecar_round_trip_and_fit_check() {
        let temp = tempfile::tempdir().unwrap();
        let part = temp.path().join("a.part");
        let meta = temp.path().join("a.part.json");
        fs::write(&part, vec![0u8; 100]).unwrap();
        let remote = Remote {
            size: Some(100),
            etag: Some("\"e\"".into()),
            ..Remote::default()
        };
        let mut sidecar = Sidecar::new(
            "http://h/b/a?X-Goog-Signature=s",
            &remote,
            plan(Some(100), true),
        );
        sidecar.segments[0].have = 40;
        sidecar.save(&meta).unwrap();
        let loaded = Sidecar::load(&meta, &part).unwrap();
        assert_eq!(loaded, sidecar);
        assert_eq!(loaded.url, "http://h/b/a");
        assert_eq!(loaded.have(), 40);
        fs::write(&part, vec![0u8; 10]).unwrap();
        assert!(Sidecar::load(&meta, &part).is_none());
    }

    #[test]
    fn hashes_are_checked() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("f");
        fs::write(&path, b"hello").unwrap();
        // md5("hello") and crc32c("hello"), base64 as GCS sends them.
        assert!(verify(&path, Some("XUFAKrxLKna5cZ2REBfFkg=="), None).is_ok());
        assert!(verify(&path, None, Some("mnG7TA==")).is_ok());
        let error = verify(&path, Some("1B2M2Y8AsgTpgAmY7PhCfg=="), None).unwrap_err();
        assert!(error.contains("MD5"), "{error}");
        assert!(verify(&path, None, None).is_ok());
    }
}
