//! Checkpoints from inside a running cell (`ferrolab::checkpoint!(epoch, model)`).
//!
//! The kernel is busy with the cell, so the session commits by itself, in the
//! same format. Its [`Settings`] come from the JSON file named by
//! `FERROLAB_CHECKPOINT_STATE`, which the kernel rewrites before each cell.
//! Saves are rate-limited by `every_secs` unless forced; a failure (a missing
//! weights file included) is reported on stderr, commits nothing and never
//! stops the training loop.

use crate::commit::Stage;
use crate::manifest::{Manifest, Status, UserFile, string_map};
use crate::vars::VarWriter;
use jzon::{JsonValue, object};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub const STATE_ENV: &str = "FERROLAB_CHECKPOINT_STATE";
const DEFAULT_EVERY_SECS: f64 = 600.0;

/// When this process last committed (seconds since the epoch).
static LAST_COMMIT: Mutex<f64> = Mutex::new(0.0);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the kernel tells the session before each cell (one struct, written
/// by the kernel and read here).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    /// The local folder checkpoints are committed in (the destination, or
    /// the spool the kernel uploads from).
    pub dir: PathBuf,
    pub every_secs: f64,
    pub last_commit_unix: f64,
    /// evcxr's type of each session variable (valid Rust in the session).
    pub types: BTreeMap<String, String>,
    /// Session files (journal, items, deps) to include.
    pub session_dir: Option<PathBuf>,
    pub environment: BTreeMap<String, String>,
}

impl Settings {
    pub fn to_json(&self) -> JsonValue {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        object! {
            "dir": path(&self.dir),
            "every_secs": self.every_secs,
            "last_commit_unix": self.last_commit_unix,
            "types": self.types.clone(),
            "session_dir": self.session_dir.as_deref().map(path),
            "environment": self.environment.clone(),
        }
    }

    pub fn from_json(value: &JsonValue) -> Settings {
        Settings {
            dir: value["dir"]
                .as_str()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("checkpoints")),
            every_secs: value["every_secs"].as_f64().unwrap_or(DEFAULT_EVERY_SECS),
            last_commit_unix: value["last_commit_unix"].as_f64().unwrap_or(0.0),
            types: string_map(&value["types"]),
            session_dir: value["session_dir"].as_str().map(PathBuf::from),
            environment: string_map(&value["environment"]),
        }
    }

    /// The settings the kernel wrote for this cell (defaults without one).
    pub fn current() -> Settings {
        let value = std::env::var_os(STATE_ENV)
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| jzon::parse(&text).ok())
            .unwrap_or(JsonValue::Null);
        Settings::from_json(&value)
    }
}

/// A save in progress.
pub struct InCell {
    stage: Stage,
    writer: VarWriter,
    settings: Settings,
    metrics: BTreeMap<String, f64>,
    files: Vec<String>,
}

/// Starts a save if `--every` has passed since the last one (or `force`).
pub fn begin(force: bool) -> Option<InCell> {
    let settings = Settings::current();
    let last = settings
        .last_commit_unix
        .max(*LAST_COMMIT.lock().unwrap_or_else(|p| p.into_inner()));
    if !force && now() - last < settings.every_secs {
        return None;
    }
    let dir = settings.dir.clone();
    match Stage::begin(&dir) {
        Ok(stage) => {
            let writer = VarWriter::new(stage.path());
            Some(InCell {
                stage,
                writer,
                settings,
                metrics: BTreeMap::new(),
                files: Vec::new(),
            })
        }
        Err(error) => {
            eprintln!(
                "ferrolab: checkpoint skipped: cannot write to {}: {error}",
                dir.display()
            );
            None
        }
    }
}

impl InCell {
    pub fn writer(&mut self) -> &mut VarWriter {
        &mut self.writer
    }

    /// The session's type name for `name` if it is a session variable (exact,
    /// as evcxr names it), else one derived from `type_name`.
    pub fn type_of(&self, name: &str, type_name: &str) -> String {
        match self.settings.types.get(name) {
            Some(ty) => ty.clone(),
            None => short_type_name(type_name),
        }
    }

    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_owned(), value);
    }

    /// Includes a file (model weights written with `VarMap::save`, say) in
    /// this checkpoint; a restore puts it back.
    pub fn file(&mut self, path: impl AsRef<Path>) {
        self.files
            .push(path.as_ref().to_string_lossy().into_owned());
    }

    /// Commits; true when a checkpoint was written.
    pub fn finish(self) -> bool {
        match self.commit() {
            Ok(message) => {
                eprintln!("{message}");
                true
            }
            Err(error) => {
                eprintln!("ferrolab: checkpoint from inside the cell failed: {error}");
                false
            }
        }
    }

    fn commit(mut self) -> Result<String, String> {
        for entry in std::mem::take(&mut self.writer.files) {
            self.stage.add_entry(entry);
        }
        if let Some(session) = &self.settings.session_dir {
            copy_session_files(&mut self.stage, session)?;
        }
        let mut user_files = Vec::new();
        for (index, named) in self.files.iter().enumerate() {
            let source = Path::new(named);
            let base = source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let stored = format!("files/{index:04}-{base}");
            self.stage
                .copy_file(source, &stored)
                .map_err(|e| format!("{named}: {e}; nothing was saved"))?;
            user_files.push(UserFile {
                original: crate::manifest::restore_name(source),
                stored,
            });
        }
        let environment = std::mem::take(&mut self.settings.environment);
        let saved = self
            .writer
            .variables
            .iter()
            .filter(|v| v.status == Status::Saved)
            .count();
        let mut manifest = Manifest {
            created_unix: now(),
            origin: "in-cell".into(),
            variables: std::mem::take(&mut self.writer.variables),
            metrics: self.metrics,
            environment,
            user_files,
            ..Manifest::default()
        };
        let not_saved: Vec<String> = manifest
            .variables
            .iter()
            .filter(|v| v.status != Status::Saved)
            .map(|v| format!("{} ({})", v.name, v.reason.clone().unwrap_or_default()))
            .collect();
        let path = self
            .stage
            .commit(&mut manifest, None)
            .map_err(|e| format!("{e}; earlier checkpoints are intact"))?;
        *LAST_COMMIT.lock().unwrap_or_else(|p| p.into_inner()) = manifest.created_unix;
        let mut message = format!(
            "ferrolab: checkpoint {} saved from inside the cell ({saved} variables, {} bytes) in {}",
            manifest.name,
            manifest.total_size(),
            path.parent().unwrap_or(&path).display()
        );
        if !not_saved.is_empty() {
            message.push_str(&format!("; not saved: {}", not_saved.join(", ")));
        }
        Ok(message)
    }
}

fn copy_session_files(stage: &mut Stage, dir: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            stage
                .copy_file(&entry.path(), &format!("session/{name}"))
                .map_err(|e| format!("cannot copy session file {name}: {e}"))?;
        }
    }
    Ok(())
}

/// `alloc::vec::Vec<alloc::string::String>` → `Vec<String>`: the last segment
/// of every path, and no default hasher parameter.
pub fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out.replace(", RandomState>", ">")
}

#[cfg(test)]
mod tests {
    use super::{Settings, short_type_name};
    use std::path::PathBuf;

    #[test]
    fn settings_the_kernel_writes_are_what_the_session_reads() {
        let settings = Settings {
            dir: PathBuf::from("/data/run \"7\"/checkpoints"),
            every_secs: 90.5,
            last_commit_unix: 1_796_315_083.25,
            types: [("model".to_owned(), "Vec<(String, f32)>".to_owned())]
                .into_iter()
                .collect(),
            session_dir: Some(PathBuf::from("/tmp/ses\u{e9}sion")),
            environment: [("rustc".to_owned(), "1.95.0\nline".to_owned())]
                .into_iter()
                .collect(),
        };
        let text = settings.to_json().dump();
        let back = Settings::from_json(&jzon::parse(&text).unwrap());
        assert_eq!(back, settings);
        // Missing or foreign fields fall back to the defaults.
        let defaults = Settings::from_json(&jzon::parse("{\"every_secs\": \"soon\"}").unwrap());
        assert_eq!(defaults.every_secs, super::DEFAULT_EVERY_SECS);
        assert_eq!(defaults.dir, PathBuf::from("checkpoints"));
        assert_eq!(defaults.session_dir, None);
    }

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_type_name("alloc::vec::Vec<alloc::string::String>"),
            "Vec<String>"
        );
        assert_eq!(
            short_type_name(
                "std::collections::hash::map::HashMap<alloc::string::String, i32, std::hash::random::RandomState>"
            ),
            "HashMap<String, i32>"
        );
        assert_eq!(short_type_name("(usize, [f32; 3])"), "(usize, [f32; 3])");
        assert_eq!(short_type_name("ctx::Model"), "Model");
    }
}
