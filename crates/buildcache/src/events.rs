//! What happened in the cache, for `%build_cache` and `ferrolab cache stats`:
//! an append-only log, one short line per event, written with `O_APPEND` in a
//! single `write` so that lines from concurrent builds never interleave on a
//! local disk. Nothing is ever read back and rewritten in place (a counter
//! file would lose updates under concurrent builds).
//!
//! Line format (version 1, space-separated, no spaces inside fields):
//! `1 <unix_ms> <kind> <key> <session> <crate> <number>`, where the number
//! is bytes for stores and evictions and milliseconds of compiling saved for
//! hits. Lines that do not parse are ignored. When the log grows past
//! [`COMPACT_BYTES`], [`compact`] folds it into `totals.json` (whole-cache
//! counts; per-session counts start over).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

pub const COMPACT_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Restored from the cache; rustc did not run.
    Hit,
    /// Looked up and not found: rustc ran.
    Miss,
    /// A new entry was published.
    Store,
    /// An entry was removed to stay under the size limit.
    Evict,
    /// An entry failed its hash check and was removed.
    Corrupt,
    /// A result could not be stored (full disk, permissions...).
    Error,
    /// A result was not stored on purpose (bigger than the whole limit).
    Skip,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Hit => "hit",
            Kind::Miss => "miss",
            Kind::Store => "store",
            Kind::Evict => "evict",
            Kind::Corrupt => "corrupt",
            Kind::Error => "error",
            Kind::Skip => "skip",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "hit" => Kind::Hit,
            "miss" => Kind::Miss,
            "store" => Kind::Store,
            "evict" => Kind::Evict,
            "corrupt" => Kind::Corrupt,
            "error" => Kind::Error,
            "skip" => Kind::Skip,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub unix_ms: u64,
    pub kind: Kind,
    pub key: String,
    pub session: String,
    pub crate_name: String,
    pub number: u64,
}

/// Counts over the whole cache (since it was last cleared).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub evictions: u64,
    pub corrupt: u64,
    pub errors: u64,
    pub skipped: u64,
    /// Compile time the hits saved, as measured when each entry was built.
    pub saved_ms: u64,
    pub stored_bytes: u64,
    pub evicted_bytes: u64,
}

impl Totals {
    fn add(&mut self, event: &Event) {
        match event.kind {
            Kind::Hit => {
                self.hits += 1;
                self.saved_ms += event.number;
            }
            Kind::Miss => self.misses += 1,
            Kind::Store => {
                self.stores += 1;
                self.stored_bytes += event.number;
            }
            Kind::Evict => {
                self.evictions += 1;
                self.evicted_bytes += event.number;
            }
            Kind::Corrupt => self.corrupt += 1,
            Kind::Error => self.errors += 1,
            Kind::Skip => self.skipped += 1,
        }
    }

    fn merge(&mut self, other: &Totals) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.stores += other.stores;
        self.evictions += other.evictions;
        self.corrupt += other.corrupt;
        self.errors += other.errors;
        self.skipped += other.skipped;
        self.saved_ms += other.saved_ms;
        self.stored_bytes += other.stored_bytes;
        self.evicted_bytes += other.evicted_bytes;
    }
}

/// One session's (one kernel's build directory's) activity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStats {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub saved_ms: u64,
    /// Crates restored from the cache.
    pub crates_hit: BTreeSet<String>,
    /// Crates compiled because the cache did not have them.
    pub crates_missed: BTreeSet<String>,
}

/// Appends one event line. Failures are ignored: statistics never fail a build.
pub fn record(log: &Path, kind: Kind, key: &str, session: &str, crate_name: &str, number: u64) {
    let clean = |text: &str| -> String {
        let cleaned: String = text
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        if cleaned.is_empty() {
            "-".to_owned()
        } else {
            cleaned
        }
    };
    let line = format!(
        "1 {} {} {} {} {} {}\n",
        now_ms(),
        kind.as_str(),
        clean(key),
        clean(session),
        clean(crate_name),
        number
    );
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    if let Ok(mut file) = file {
        let _ = file.write_all(line.as_bytes());
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn parse_line(line: &str) -> Option<Event> {
    let mut fields = line.split(' ');
    if fields.next()? != "1" {
        return None;
    }
    let unix_ms = fields.next()?.parse().ok()?;
    let kind = Kind::parse(fields.next()?)?;
    let key = fields.next()?.to_owned();
    let session = fields.next()?.to_owned();
    let crate_name = fields.next()?.to_owned();
    let number = fields.next()?.trim_end().parse().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Some(Event {
        unix_ms,
        kind,
        key,
        session,
        crate_name,
        number,
    })
}

pub fn read(log: &Path) -> Vec<Event> {
    let Ok(bytes) = std::fs::read(log) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(parse_line)
        .collect()
}

/// Whole-cache totals: the compacted counts plus the live log.
pub fn totals(log: &Path, compacted: &Path) -> Totals {
    let mut totals: Totals = std::fs::read(compacted)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    for event in read(log) {
        totals.add(&event);
    }
    totals
}

pub fn session(log: &Path, session: &str) -> SessionStats {
    let mut stats = SessionStats::default();
    for event in read(log).into_iter().filter(|e| e.session == session) {
        match event.kind {
            Kind::Hit => {
                stats.hits += 1;
                stats.saved_ms += event.number;
                stats.crates_hit.insert(event.crate_name);
            }
            Kind::Miss => {
                stats.misses += 1;
                stats.crates_missed.insert(event.crate_name);
            }
            Kind::Store => stats.stores += 1,
            _ => {}
        }
    }
    stats
}

/// Hits per entry key (from the live log).
pub fn hits_by_key(log: &Path) -> std::collections::HashMap<String, u64> {
    let mut hits = std::collections::HashMap::new();
    for event in read(log).into_iter().filter(|e| e.kind == Kind::Hit) {
        *hits.entry(event.key).or_insert(0) += 1;
    }
    hits
}

/// Folds a log bigger than [`COMPACT_BYTES`] into the totals file. The
/// caller holds the cache's maintenance lock, so only one compaction runs.
/// `aside` is a fresh path on the same filesystem to move the log to.
pub fn compact(log: &Path, compacted: &Path, aside: &Path) -> std::io::Result<bool> {
    let big = std::fs::metadata(log).is_ok_and(|m| m.len() > COMPACT_BYTES);
    if !big {
        return Ok(false);
    }
    std::fs::rename(log, aside)?;
    let mut totals: Totals = std::fs::read(compacted)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut folded = Totals::default();
    for event in read(aside) {
        folded.add(&event);
    }
    totals.merge(&folded);
    let staged = compacted.with_extension("json.new");
    std::fs::write(&staged, serde_json::to_vec(&totals)?)?;
    std::fs::rename(&staged, compacted)?;
    let _ = std::fs::remove_file(aside);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.log");
        record(&log, Kind::Miss, "k1", "s1", "itoa", 0);
        record(&log, Kind::Store, "k1", "s1", "itoa", 1000);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"garbage line\n1 2 hit\n")
            .unwrap();
        record(&log, Kind::Hit, "k1", "s 2", "itoa", 250);
        let events = read(&log);
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].session, "s_2");
        let totals = totals(&log, &dir.path().join("totals.json"));
        assert_eq!((totals.hits, totals.misses, totals.stores), (1, 1, 1));
        assert_eq!(totals.saved_ms, 250);
        assert_eq!(totals.stored_bytes, 1000);
        let first = session(&log, "s1");
        assert_eq!((first.hits, first.misses), (0, 1));
        assert!(first.crates_missed.contains("itoa"));
        let second = session(&log, "s_2");
        assert_eq!((second.hits, second.misses), (1, 0));
    }

    #[test]
    fn compaction_keeps_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.log");
        let compacted = dir.path().join("totals.json");
        let count = COMPACT_BYTES / 30 + 10;
        let mut text = String::new();
        for i in 0..count {
            text.push_str(&format!("1 {i} hit key session crate 2\n"));
        }
        std::fs::write(&log, text).unwrap();
        assert!(compact(&log, &compacted, &dir.path().join("aside")).unwrap());
        record(&log, Kind::Hit, "key", "session", "crate", 2);
        let totals = totals(&log, &compacted);
        assert_eq!(totals.hits, count + 1);
        assert_eq!(totals.saved_ms, 2 * (count + 1));
        // Small logs are left alone.
        assert!(!compact(&log, &compacted, &dir.path().join("aside")).unwrap());
    }
}
