//! `MANIFEST.json`: what a checkpoint holds, and the check that makes it valid.
//!
//! Converted to and from JSON by hand (through `jzon::JsonValue`, whose
//! objects keep their keys in order and whose parser refuses nesting deeper
//! than 512 without recursing) so the session build needs no proc macros.
//! Unknown fields are ignored, so a newer kernel can add some; `schema`
//! changes only when old readers would misread.
//!
//! A manifest is data, never trusted code: [`Manifest::validate`] accepts only
//! variable names that are Rust identifiers and paths that stay inside the
//! checkpoint, each listed in the file table (so each is hash-checked).

#[cfg(feature = "kernel")]
use crate::hash::{HashProblem, hash_listed};
use jzon::{JsonValue, object};
use std::collections::BTreeMap;
use std::path::Path;

pub const MANIFEST: &str = "MANIFEST.json";
pub const SCHEMA: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Saved,
    Skipped,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Saved => "saved",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Status> {
        match text {
            "saved" => Some(Status::Saved),
            "skipped" => Some(Status::Skipped),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// One session variable and what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    /// The type as evcxr names it in the session (valid Rust there).
    pub ty: String,
    pub status: Status,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Its file, relative to the checkpoint directory.
    pub file: Option<String>,
}

/// A file inside the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the checkpoint directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A user file saved with `--files`: where it came from, where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFile {
    /// As the user named it (relative paths are relative to the notebook's
    /// directory at save time, and restored relative to it).
    pub original: String,
    pub stored: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    pub name: String,
    pub created_unix: f64,
    /// `manual`, `auto` or `in-cell`.
    pub origin: String,
    pub variables: Vec<Variable>,
    pub files: Vec<FileEntry>,
    pub user_files: Vec<UserFile>,
    pub metrics: BTreeMap<String, f64>,
    pub environment: BTreeMap<String, String>,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    pub fn saved(&self) -> impl Iterator<Item = &Variable> {
        self.variables.iter().filter(|v| v.status == Status::Saved)
    }

    pub fn to_json(&self) -> JsonValue {
        let variables: Vec<JsonValue> = self
            .variables
            .iter()
            .map(|v| {
                object! {"name": v.name.as_str(), "type": v.ty.as_str(),
                "status": v.status.as_str(), "reason": v.reason.as_deref(),
                "file": v.file.as_deref()}
            })
            .collect();
        let files: Vec<JsonValue> = self
            .files
            .iter()
            .map(|f| object! {"path": f.path.as_str(), "size": f.size, "sha256": f.sha256.as_str()})
            .collect();
        let user_files: Vec<JsonValue> = self
            .user_files
            .iter()
            .map(|f| object! {"original": f.original.as_str(), "stored": f.stored.as_str()})
            .collect();
        object! {
            "schema": SCHEMA,
            "format": "ferrolab-checkpoint",
            "name": self.name.as_str(),
            "created_unix": self.created_unix,
            "origin": self.origin.as_str(),
            "variables": variables,
            "files": files,
            "user_files": user_files,
            "metrics": self.metrics.clone(),
            "environment": self.environment.clone(),
        }
    }

    pub fn from_json(value: &JsonValue) -> Result<Manifest, String> {
        if !value.is_object() {
            return Err("the manifest is not a JSON object".into());
        }
        if value["format"].as_str() != Some("ferrolab-checkpoint") {
            return Err("not a ferrolab checkpoint manifest".into());
        }
        let schema = value["schema"].as_u64().unwrap_or(0);
        if schema != SCHEMA {
            return Err(format!(
                "manifest schema {schema} is not supported (this ferrolab reads {SCHEMA})"
            ));
        }
        let text = |o: &JsonValue, key: &str| -> Result<String, String> {
            o[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("manifest field `{key}` is missing"))
        };
        let opt_text = |o: &JsonValue, key: &str| o[key].as_str().map(str::to_owned);
        // The objects of the array `key` (anything else in it is ignored).
        let list = |key: &str| value[key].members().filter(|item| item.is_object());
        let mut variables = Vec::new();
        for v in list("variables") {
            let status = text(v, "status")?;
            variables.push(Variable {
                name: text(v, "name")?,
                ty: text(v, "type")?,
                status: Status::parse(&status)
                    .ok_or_else(|| format!("unknown variable status `{status}`"))?,
                reason: opt_text(v, "reason"),
                file: opt_text(v, "file"),
            });
        }
        let mut files = Vec::new();
        for f in list("files") {
            files.push(FileEntry {
                path: text(f, "path")?,
                size: f["size"]
                    .as_u64()
                    .ok_or("manifest file entry without a size")?,
                sha256: text(f, "sha256")?,
            });
        }
        let mut user_files = Vec::new();
        for f in list("user_files") {
            user_files.push(UserFile {
                original: text(f, "original")?,
                stored: text(f, "stored")?,
            });
        }
        let metrics = value["metrics"]
            .entries()
            .filter_map(|(k, v)| Some((k.to_owned(), v.as_f64()?)))
            .collect();
        Ok(Manifest {
            name: text(value, "name")?,
            created_unix: value["created_unix"].as_f64().unwrap_or(0.0),
            origin: opt_text(value, "origin").unwrap_or_default(),
            variables,
            files,
            user_files,
            metrics,
            environment: string_map(&value["environment"]),
        })
    }
}

/// The string members of a JSON object (nothing for anything else).
pub fn string_map(value: &JsonValue) -> BTreeMap<String, String> {
    value
        .entries()
        .filter_map(|(k, v)| Some((k.to_owned(), v.as_str()?.to_owned())))
        .collect()
}

/// How a saved user file is recorded (its restore target): relative to the
/// current directory when it lies inside it (no `.` or `..` left), else its
/// absolute path (which a restore refuses to write to, naming it).
pub fn restore_name(file: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    let absolute = if file.is_absolute() {
        file.to_owned()
    } else {
        cwd.as_ref()
            .map_or_else(|| file.to_owned(), |c| c.join(file))
    };
    let mut clean = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    match cwd.as_ref().and_then(|c| clean.strip_prefix(c).ok()) {
        Some(inside) if !inside.as_os_str().is_empty() => inside.to_string_lossy().into_owned(),
        _ => clean.to_string_lossy().into_owned(),
    }
}

/// A path inside a checkpoint or under a restore directory: relative,
/// `/`-separated, with no empty, `.` or `..` part, no backslash and no NUL.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// A Rust identifier that can name a `let` binding: ASCII or Unicode
/// letters, digits and `_`, not starting with a digit, not `_` alone, not a
/// keyword unless written raw (`r#type`).
pub fn is_identifier(name: &str) -> bool {
    let (raw, body) = match name.strip_prefix("r#") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let mut chars = body.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first == '_' || first.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && body != "_"
        && (raw || !KEYWORDS.contains(&body))
        && !(raw && matches!(body, "crate" | "self" | "super" | "Self"))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Refuses what restore must never act on: names that are not
    /// identifiers, paths outside the checkpoint, files not in the hashed
    /// table. A user file's `original` (its restore target) may be absolute
    /// (restore refuses that entry alone) but never contains `..`.
    pub fn validate(&self) -> Result<(), String> {
        let mut listed = std::collections::BTreeSet::new();
        for file in &self.files {
            if !is_safe_relative(&file.path) {
                return Err(format!("{}: unsafe path in the manifest", file.path));
            }
            if !is_sha256_hex(&file.sha256) {
                return Err(format!("{}: malformed SHA-256 in the manifest", file.path));
            }
            if !listed.insert(file.path.as_str()) {
                return Err(format!("{}: listed twice in the manifest", file.path));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for variable in &self.variables {
            if !is_identifier(&variable.name) {
                return Err(format!(
                    "variable name {:?} is not a Rust identifier",
                    variable.name
                ));
            }
            if !names.insert(variable.name.as_str()) {
                return Err(format!("variable `{}` is listed twice", variable.name));
            }
            if let Some(file) = &variable.file
                && !listed.contains(file.as_str())
            {
                return Err(format!(
                    "variable `{}`: its file {file:?} is not in the manifest's file table",
                    variable.name
                ));
            }
        }
        for file in &self.user_files {
            if !listed.contains(file.stored.as_str()) {
                return Err(format!(
                    "user file {:?}: {:?} is not in the manifest's file table",
                    file.original, file.stored
                ));
            }
            let target = file.original.trim_start_matches('/');
            if file.original.is_empty() || !is_safe_relative(target) {
                return Err(format!(
                    "user file {:?}: unsafe restore path in the manifest",
                    file.original
                ));
            }
        }
        Ok(())
    }
}

/// The largest `MANIFEST.json` read (a real one is a few KB per variable).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Reads, parses and validates `dir/MANIFEST.json` (a regular file, never
/// through a symlink, at most [`MAX_MANIFEST_BYTES`]).
#[cfg(feature = "kernel")]
pub fn read(dir: &Path) -> Result<Manifest, String> {
    let text = read_text(dir)?;
    parse(&text)
}

/// The manifest's text (see [`read`] for what is refused).
#[cfg(feature = "kernel")]
pub fn read_text(dir: &Path) -> Result<String, String> {
    use std::io::Read;
    let path = dir.join(MANIFEST);
    let (file, size) = match crate::hash::open_regular(&path) {
        Ok(opened) => opened,
        Err(HashProblem::Io(_)) if std::fs::symlink_metadata(&path).is_err() => {
            return Err("no MANIFEST.json (an unfinished save)".to_owned());
        }
        Err(problem) => return Err(format!("cannot read MANIFEST.json: {problem}")),
    };
    if size > MAX_MANIFEST_BYTES {
        return Err(format!(
            "MANIFEST.json is {size} bytes, too large to be one"
        ));
    }
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read MANIFEST.json: {e}"))?;
    Ok(text)
}

/// Parses and validates manifest text.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let value = jzon::parse(text).map_err(|e| format!("MANIFEST.json does not parse: {e}"))?;
    let manifest = Manifest::from_json(&value)?;
    manifest.validate()?;
    Ok(manifest)
}

/// How thoroughly [`check`] looks at the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Each file exists with the recorded size.
    Sizes,
    /// Sizes and SHA-256 of every byte.
    Hashes,
}

/// Problems with the files a manifest lists (empty: the checkpoint is
/// valid). Only regular files are looked at, never through a symlink; with
/// [`Depth::Hashes`], at most each file's recorded size is read and `cancel`
/// is asked between blocks (a cancelled check reports `interrupted`).
#[cfg(feature = "kernel")]
pub fn check(
    dir: &Path,
    manifest: &Manifest,
    depth: Depth,
    cancel: &dyn Fn() -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.files {
        if !is_safe_relative(&file.path) {
            problems.push(format!("{}: unsafe path in the manifest", file.path));
            continue;
        }
        if file.path.split('/').count() > 1 && !parents_are_directories(dir, &file.path) {
            problems.push(format!(
                "{}: a folder on its path is a symlink or not a folder",
                file.path
            ));
            continue;
        }
        let path = dir.join(&file.path);
        let outcome = match depth {
            Depth::Sizes => match std::fs::symlink_metadata(&path) {
                Err(e) => Err(HashProblem::Io(e.to_string())),
                Ok(meta) if !meta.file_type().is_file() => Err(HashProblem::NotRegular),
                Ok(meta) if meta.len() != file.size => Err(HashProblem::Size(meta.len())),
                Ok(_) => Ok(None),
            },
            Depth::Hashes => hash_listed(&path, file.size, cancel).map(Some),
        };
        match outcome {
            Ok(Some(digest)) if digest != file.sha256 => {
                problems.push(format!("{}: SHA-256 does not match (corrupted)", file.path))
            }
            Ok(_) => {}
            Err(HashProblem::Size(size)) => problems.push(format!(
                "{}: {size} bytes, the manifest says {}",
                file.path, file.size
            )),
            Err(HashProblem::Cancelled) => {
                problems.push("interrupted before every file was checked".to_owned());
                break;
            }
            Err(problem) => problems.push(format!("{}: {problem}", file.path)),
        }
    }
    problems
}

/// Every folder between `dir` and `rel`'s last part is a real directory.
#[cfg(feature = "kernel")]
fn parents_are_directories(dir: &Path, rel: &str) -> bool {
    let mut current = dir.to_owned();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => {}
            _ => return false,
        }
    }
    true
}

// The tests use what only the kernel has (listing, verifying); every
// workspace test build turns `kernel` on.
#[cfg(all(test, feature = "kernel"))]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_everything() {
        let manifest = Manifest {
            name: "ckpt-000001".into(),
            created_unix: 1_700_000_000.5,
            origin: "manual".into(),
            variables: vec![
                Variable {
                    name: "w".into(),
                    ty: "Vec<f32>".into(),
                    status: Status::Saved,
                    reason: None,
                    file: Some("vars/w.msgpack".into()),
                },
                Variable {
                    name: "f".into(),
                    ty: "File".into(),
                    status: Status::Skipped,
                    reason: Some("no Serialize".into()),
                    file: None,
                },
            ],
            files: vec![FileEntry {
                path: "vars/w.msgpack".into(),
                size: 9,
                sha256: "00".into(),
            }],
            user_files: vec![UserFile {
                original: "data/a.txt".into(),
                stored: "files/0-a.txt".into(),
            }],
            metrics: [("loss".to_owned(), 0.25)].into_iter().collect(),
            environment: [("rustc".to_owned(), "1.95".to_owned())]
                .into_iter()
                .collect(),
        };
        let text = manifest.to_json().pretty(2);
        let back = Manifest::from_json(&jzon::parse(&text).unwrap()).unwrap();
        assert_eq!(back, manifest);
        // The keys are written in a fixed order, `schema` first.
        assert!(
            text.starts_with("{\n  \"schema\": 1,\n  \"format\""),
            "{text}"
        );
    }

    #[test]
    fn a_diverging_metric_is_written_as_null_and_left_out_on_reading() {
        let manifest = Manifest {
            name: "ckpt-000001".into(),
            metrics: [("loss".to_owned(), f64::NAN), ("acc".to_owned(), 0.5)]
                .into_iter()
                .collect(),
            ..Manifest::default()
        };
        let text = manifest.to_json().dump();
        assert!(text.contains("\"loss\":null"), "{text}");
        let back = parse(&text).unwrap();
        assert_eq!(back.metrics.get("acc"), Some(&0.5));
        assert_eq!(back.metrics.get("loss"), None);
    }

    #[test]
    fn hostile_text_is_refused_without_crashing() {
        // Nesting a recursive parser would overflow the stack on.
        let deep = "[".repeat(1 << 20);
        assert!(parse(&deep).unwrap_err().contains("does not parse"));
        let deep_object = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(parse(&deep_object).unwrap_err().contains("does not parse"));
        // Sizes must be whole, non-negative numbers.
        let mut value = Manifest::default().to_json();
        value["name"] = "ckpt-000001".into();
        for size in ["1.5", "-1", "\"9\"", "1e400"] {
            value["files"] = jzon::parse(&format!(
                r#"[{{"path": "vars/x.msgpack", "size": {size}, "sha256": "00"}}]"#
            ))
            .unwrap_or(JsonValue::Null);
            if value["files"].is_null() {
                continue;
            }
            assert!(Manifest::from_json(&value).is_err(), "size {size} accepted");
        }
    }

    #[test]
    fn paths_outside_the_checkpoint_are_refused() {
        let dir = std::env::temp_dir().join(format!("ferrolab-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = Manifest {
            files: ["../outside", "vars//x", "/etc/passwd"]
                .iter()
                .map(|path| FileEntry {
                    path: path.to_string(),
                    size: 0,
                    sha256: String::new(),
                })
                .collect(),
            ..Manifest::default()
        };
        let problems = check(&dir, &manifest, Depth::Hashes, &|| false);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.contains("unsafe path")),
            "{problems:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_must_be_identifiers_and_paths_listed_and_inside() {
        let good = || Manifest {
            variables: vec![Variable {
                name: "count".into(),
                ty: "u64".into(),
                status: Status::Saved,
                reason: None,
                file: Some("vars/count.msgpack".into()),
            }],
            files: vec![
                FileEntry {
                    path: "vars/count.msgpack".into(),
                    size: 1,
                    sha256: "a".repeat(64),
                },
                FileEntry {
                    path: "files/0000-notes.txt".into(),
                    size: 1,
                    sha256: "b".repeat(64),
                },
            ],
            user_files: vec![UserFile {
                original: "data/notes.txt".into(),
                stored: "files/0000-notes.txt".into(),
            }],
            ..Manifest::default()
        };
        assert_eq!(good().validate(), Ok(()));
        let injected =
            "count: u64 = { std::fs::write(\"/tmp/x\", \"\").unwrap(); 1 }; let mut count2";
        type Tamper = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Tamper, &str)> = vec![
            (
                Box::new(|m| m.variables[0].name = injected.into()),
                "not a Rust identifier",
            ),
            (
                Box::new(|m| m.variables[0].name = "fn".into()),
                "not a Rust identifier",
            ),
            (
                Box::new(|m| m.variables[0].name = "1abc".into()),
                "not a Rust identifier",
            ),
            (
                Box::new(|m| m.variables[0].file = Some("../../../outside.msgpack".into())),
                "not in the manifest's file table",
            ),
            (
                Box::new(|m| m.variables[0].file = Some("vars/other.msgpack".into())),
                "not in the manifest's file table",
            ),
            (
                Box::new(|m| m.files[0].path = "/etc/hostname".into()),
                "unsafe path",
            ),
            (
                Box::new(|m| m.files[0].path = "vars/../x".into()),
                "unsafe path",
            ),
            (
                Box::new(|m| m.user_files[0].stored = "/etc/hostname".into()),
                "not in the manifest's file table",
            ),
            (
                Box::new(|m| m.user_files[0].original = "../../anywhere".into()),
                "unsafe restore path",
            ),
            (
                Box::new(|m| m.user_files[0].original = "a/./b".into()),
                "unsafe restore path",
            ),
            (
                Box::new(|m| m.files[1].sha256 = "xyz".into()),
                "malformed SHA-256",
            ),
        ];
        for (tamper, expected) in cases {
            let mut manifest = good();
            tamper(&mut manifest);
            let error = manifest.validate().unwrap_err();
            assert!(error.contains(expected), "{error} (wanted {expected})");
        }
        for name in ["r#type", "épsilon", "_x", "x1"] {
            assert!(is_identifier(name), "{name}");
        }
        for name in ["_", "r#self", "a-b", "a b", ""] {
            assert!(!is_identifier(name), "{name}");
        }
    }

    #[test]
    fn foreign_json_and_other_schemas_are_refused() {
        assert!(Manifest::from_json(&object! {"name": "x"}).is_err());
        let mut value = Manifest::default().to_json();
        value["schema"] = 99.into();
        assert!(
            Manifest::from_json(&value)
                .unwrap_err()
                .contains("schema 99")
        );
    }
}
