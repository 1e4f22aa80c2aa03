//! Execution history kept on disk (JSON lines), so it survives restarts.
//!
//! Each kernel process claims a new session number the first time it needs one
//! (under an exclusive `flock`, so two kernels never share one). Every stored
//! cell is one appended line. A failed write (full disk, read-only home) is
//! logged once and the entry is kept in memory: history never stops a cell.
//! Queries follow IPython: `tail` (last n), `range` (session/start/stop, 0 and
//! negative sessions are relative to the current one), `search` (glob over the
//! whole input, last n matches, optionally unique).
//!
//! The file is private: created 0600 in a directory created 0700, and an
//! existing file others could read is narrowed to 0600. What is stored is the
//! text the [`Interpreter`](super::Interpreter) gives for the cell, with the
//! secrets typed into it redacted (the kernel itself knows no magics).

use crate::protocol::content::{HistoryAccess, HistoryRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One stored line of history. Line 0 only marks that a session started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    session: i64,
    line: u64,
    #[serde(default)]
    input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<String>,
}

const DEFAULT_TAIL: usize = 10;

pub struct History {
    path: Option<PathBuf>,
    session: Option<i64>,
    unsaved: Vec<Record>,
    warned: bool,
}

impl History {
    /// History stored at `path` (`None`: memory only).
    pub fn open(path: Option<PathBuf>) -> Self {
        History {
            path,
            session: None,
            unsaved: Vec::new(),
            warned: false,
        }
    }

    /// The default location: `$FERROLAB_HISTORY_FILE`, else
    /// `$XDG_DATA_HOME/ferrolab/history.jsonl` (`~/.local/share/...`).
    pub fn default_path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("FERROLAB_HISTORY_FILE") {
            return Some(PathBuf::from(path));
        }
        let data = crate::paths::base_dir(crate::paths::Base::Data)?;
        Some(data.join("ferrolab").join("history.jsonl"))
    }

    /// This process's session number, claimed on first use.
    pub fn session(&mut self) -> i64 {
        if let Some(session) = self.session {
            return session;
        }
        let session = match self.claim_session() {
            Ok(session) => session,
            Err(error) => {
                self.warn(&error);
                1
            }
        };
        self.session = Some(session);
        session
    }

    fn claim_session(&self) -> std::io::Result<i64> {
        let path = self
            .path
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no history file"))?;
        let mut file = open_private(path, true)?;
        let _lock = FileLock::exclusive(&file)?;
        let session = last_session(&mut file)? + 1;
        let marker = Record {
            session,
            line: 0,
            input: String::new(),
            output: None,
            started: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        };
        write_record(&mut file, &marker)?;
        Ok(session)
    }

    /// Appends one executed cell.
    pub fn store(&mut self, line: u64, input: &str, output: Option<&str>) {
        let record = Record {
            session: self.session(),
            line,
            input: input.to_owned(),
            output: output.map(str::to_owned),
            started: None,
        };
        let result = self
            .path
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no history file"))
            .and_then(|path| open_private(path, false))
            .and_then(|mut file| write_record(&mut file, &record));
        if let Err(error) = result {
            self.warn(&error);
            self.unsaved.push(record);
        }
    }

    fn warn(&mut self, error: &std::io::Error) {
        if !self.warned && self.path.is_some() {
            self.warned = true;
            log::warn!(
                "history: cannot write {}: {error}; keeping this session's history in memory",
                self.path.as_deref().unwrap_or(Path::new("")).display()
            );
        }
    }

    /// Answers a `history_request`: a list of `[session, line, input]` or
    /// `[session, line, [input, output]]`.
    pub fn query(&mut self, request: &HistoryRequest) -> Vec<Value> {
        let current = self.session();
        let mut records = self.read_all();
        records.retain(|record| record.line > 0);
        let selected: Vec<Record> = match request.hist_access_type {
            HistoryAccess::Tail => last_n(records, request.n.unwrap_or(DEFAULT_TAIL)),
            HistoryAccess::Range => {
                let session = match request.session {
                    s if s <= 0 => current + s,
                    s => s,
                };
                let start = request.start.max(0) as u64;
                records
                    .into_iter()
                    .filter(|r| r.session == session && r.line >= start)
                    .filter(|r| request.stop.is_none_or(|stop| (r.line as i64) < stop))
                    .collect()
            }
            HistoryAccess::Search => {
                let pattern = request.pattern.as_deref().unwrap_or("*");
                let matcher = match glob::Pattern::new(pattern) {
                    Ok(matcher) => matcher,
                    Err(_) => return Vec::new(),
                };
                let mut matches: Vec<Record> = records
                    .into_iter()
                    .filter(|r| matcher.matches(&r.input))
                    .collect();
                if request.unique {
                    matches = keep_last_unique(matches);
                }
                match request.n {
                    Some(n) => last_n(matches, n),
                    None => matches,
                }
            }
        };
        selected
            .into_iter()
            .map(|record| {
                if request.output {
                    json!([record.session, record.line, [record.input, record.output]])
                } else {
                    json!([record.session, record.line, record.input])
                }
            })
            .collect()
    }

    fn read_all(&self) -> Vec<Record> {
        let mut records: Vec<Record> = match self.path.as_ref().map(File::open) {
            Some(Ok(file)) => BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| serde_json::from_str(&line).ok())
                .collect(),
            _ => Vec::new(),
        };
        records.extend(self.unsaved.iter().cloned());
        records
    }
}

/// Opens the history for appending (and reading), creating it with mode
/// 0600 in a directory created with mode 0700: cells can hold secrets, and
/// only the user may read them. A file others could read (left by an older
/// version) is narrowed to 0600; an existing directory is left as it is (it
/// may be shared, e.g. `FERROLAB_HISTORY_FILE=/tmp/h.jsonl`).
fn open_private(path: &Path, read: bool) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .read(read)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let metadata = file.metadata()?;
    if metadata.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

fn write_record(file: &mut File, record: &Record) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // One write call per record: appends from several kernels never interleave.
    file.write_all(&line)
}

/// The highest session number in the last part of the file (sessions only grow).
fn last_session(file: &mut File) -> std::io::Result<i64> {
    const TAIL_BYTES: u64 = 256 * 1024;
    let length = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(String::from_utf8_lossy(&tail)
        .lines()
        .filter_map(|line| serde_json::from_str::<Record>(line).ok())
        .map(|record| record.session)
        .max()
        .unwrap_or(0))
}

fn last_n(mut records: Vec<Record>, n: usize) -> Vec<Record> {
    let skip = records.len().saturating_sub(n);
    records.drain(..skip);
    records
}

/// Keeps the latest occurrence of each distinct input, in chronological order.
fn keep_last_unique(records: Vec<Record>) -> Vec<Record> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Record> = records
        .into_iter()
        .rev()
        .filter(|record| seen.insert(record.input.clone()))
        .collect();
    kept.reverse();
    kept
}

/// An exclusive advisory lock, released on drop (the file must outlive it).
struct FileLock {
    fd: std::os::fd::RawFd,
}

impl FileLock {
    fn exclusive(file: &File) -> std::io::Result<Self> {
        let fd = file.as_raw_fd();
        // SAFETY: flock on a valid, open file descriptor.
        let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock { fd })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking the descriptor locked in `exclusive`, still open.
        unsafe { libc::flock(self.fd, libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> HistoryRequest {
        serde_json::from_value(value).unwrap()
    }

    fn temp_history() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("history.jsonl");
        (dir, path)
    }

    #[test]
    fn sessions_increase_across_processes() {
        let (_dir, path) = temp_history();
        let mut first = History::open(Some(path.clone()));
        assert_eq!(first.session(), 1);
        first.store(1, "let a = 1;", None);
        let mut second = History::open(Some(path.clone()));
        assert_eq!(second.session(), 2);
        let mut third = History::open(Some(path));
        assert_eq!(third.session(), 3);
    }

    #[test]
    fn tail_returns_last_n_across_sessions() {
        let (_dir, path) = temp_history();
        let mut old = History::open(Some(path.clone()));
        old.store(1, "old", None);
        let mut history = History::open(Some(path));
        for (i, code) in ["a", "b", "c"].iter().enumerate() {
            history.store(i as u64 + 1, code, Some("out"));
        }
        let tail = history.query(&request(json!({"hist_access_type": "tail", "n": 2})));
        assert_eq!(tail, vec![json!([2, 2, "b"]), json!([2, 3, "c"])]);
        let four = history.query(&request(json!({"hist_access_type": "tail", "n": 4})));
        assert_eq!(four[0], json!([1, 1, "old"]));
        let with_output = history.query(&request(
            json!({"hist_access_type": "tail", "n": 1, "output": true}),
        ));
        assert_eq!(with_output, vec![json!([2, 3, ["c", "out"]])]);
    }

    #[test]
    fn range_selects_lines_in_one_session() {
        let (_dir, path) = temp_history();
        let mut history = History::open(Some(path));
        for line in 1..=5 {
            history.store(line, &format!("cell {line}"), None);
        }
        let range = history.query(&request(
            json!({"hist_access_type": "range", "session": 1, "start": 2, "stop": 4}),
        ));
        assert_eq!(
            range,
            vec![json!([1, 2, "cell 2"]), json!([1, 3, "cell 3"])]
        );
        let current = history.query(&request(
            json!({"hist_access_type": "range", "session": 0, "start": 5}),
        ));
        assert_eq!(current, vec![json!([1, 5, "cell 5"])]);
        let previous = history.query(&request(
            json!({"hist_access_type": "range", "session": -1}),
        ));
        assert!(previous.is_empty());
    }

    #[test]
    fn search_is_glob_with_n_and_unique() {
        let (_dir, path) = temp_history();
        let mut history = History::open(Some(path));
        let inputs = [
            "let x = 1;",
            "x + 1",
            "let x = 1;",
            "println!(\"{x}\")",
            "let x = 1;",
        ];
        for (i, input) in inputs.iter().enumerate() {
            history.store(i as u64 + 1, input, None);
        }
        let all = history.query(&request(
            json!({"hist_access_type": "search", "pattern": "let*"}),
        ));
        assert_eq!(all.len(), 3);
        let unique = history.query(&request(
            json!({"hist_access_type": "search", "pattern": "let*", "unique": true}),
        ));
        assert_eq!(unique, vec![json!([1, 5, "let x = 1;"])]);
        let last_two = history.query(&request(
            json!({"hist_access_type": "search", "pattern": "*x*", "n": 2}),
        ));
        assert_eq!(last_two.len(), 2);
        assert_eq!(last_two[1], json!([1, 5, "let x = 1;"]));
        let case = history.query(&request(
            json!({"hist_access_type": "search", "pattern": "LET*"}),
        ));
        assert!(case.is_empty(), "glob is case-sensitive");
        let class = history.query(&request(
            json!({"hist_access_type": "search", "pattern": "[xp]*"}),
        ));
        assert_eq!(class.len(), 2);
    }

    #[test]
    fn multi_line_input_matches_star() {
        let (_dir, path) = temp_history();
        let mut history = History::open(Some(path));
        history.store(1, "fn f() {\n    1\n}", None);
        let found = history.query(&request(
            json!({"hist_access_type": "search", "pattern": "fn*}"}),
        ));
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn unwritable_file_keeps_history_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: every open fails.
        let path = dir.path().join("history.jsonl");
        std::fs::create_dir(&path).unwrap();
        let mut history = History::open(Some(path));
        history.store(1, "a", None);
        history.store(2, "b", None);
        let tail = history.query(&request(json!({"hist_access_type": "tail", "n": 5})));
        assert_eq!(tail.len(), 2);
    }

    #[test]
    fn the_file_is_private_to_the_user() {
        let (dir, path) = temp_history();
        let mut history = History::open(Some(path.clone()));
        history.store(1, "%env KAGGLE_KEY=<hidden>", None);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // A file an older version left readable is narrowed.
        let old = dir.path().join("old.jsonl");
        std::fs::write(&old, "").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        History::open(Some(old.clone())).store(1, "x", None);
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let (_dir, path) = temp_history();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "not json\n{\"session\": 4, \"line\": 1, \"input\": \"x\"}\n",
        )
        .unwrap();
        let mut history = History::open(Some(path));
        assert_eq!(history.session(), 5);
        let tail = history.query(&request(json!({"hist_access_type": "tail", "n": 5})));
        assert_eq!(tail, vec![json!([4, 1, "x"])]);
    }
}
