//! `MANIFEST.json`: what a checkpoint holds, and the check that makes it valid.
//!
//! Converted to and from JSON by hand (through `serde_json::Value`) so the
//! session build needs no proc macros. Unknown fields are ignored, so a newer
//! kernel can add some; `schema` changes only when old readers would misread.

use crate::hash::hash_file;
use serde_json::{Map, Value, json};
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

    pub fn to_json(&self) -> Value {
        let variables: Vec<Value> = self
            .variables
            .iter()
            .map(|v| {
                json!({"name": v.name, "type": v.ty, "status": v.status.as_str(),
                       "reason": v.reason, "file": v.file})
            })
            .collect();
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| json!({"path": f.path, "size": f.size, "sha256": f.sha256}))
            .collect();
        let user_files: Vec<Value> = self
            .user_files
            .iter()
            .map(|f| json!({"original": f.original, "stored": f.stored}))
            .collect();
        json!({
            "schema": SCHEMA,
            "format": "ferrolab-checkpoint",
            "name": self.name,
            "created_unix": self.created_unix,
            "origin": self.origin,
            "variables": variables,
            "files": files,
            "user_files": user_files,
            "metrics": self.metrics,
            "environment": self.environment,
        })
    }

    pub fn from_json(value: &Value) -> Result<Manifest, String> {
        let object = value
            .as_object()
            .ok_or("the manifest is not a JSON object")?;
        if object.get("format").and_then(Value::as_str) != Some("ferrolab-checkpoint") {
            return Err("not a ferrolab checkpoint manifest".into());
        }
        let schema = object.get("schema").and_then(Value::as_u64).unwrap_or(0);
        if schema != SCHEMA {
            return Err(format!(
                "manifest schema {schema} is not supported (this ferrolab reads {SCHEMA})"
            ));
        }
        let text = |o: &Map<String, Value>, key: &str| -> Result<String, String> {
            o.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("manifest field `{key}` is missing"))
        };
        let opt_text = |o: &Map<String, Value>, key: &str| {
            o.get(key).and_then(Value::as_str).map(str::to_owned)
        };
        let list = |key: &str| -> Vec<&Map<String, Value>> {
            object
                .get(key)
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default()
        };
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
                size: f
                    .get("size")
                    .and_then(Value::as_u64)
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
        let metrics = object
            .get("metrics")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let environment = object
            .get("environment")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Manifest {
            name: text(object, "name")?,
            created_unix: object
                .get("created_unix")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            origin: opt_text(object, "origin").unwrap_or_default(),
            variables,
            files,
            user_files,
            metrics,
            environment,
        })
    }
}

/// Reads and parses `dir/MANIFEST.json`.
pub fn read(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no MANIFEST.json (an unfinished save)".to_owned(),
        _ => format!("cannot read MANIFEST.json: {e}"),
    })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("MANIFEST.json does not parse: {e}"))?;
    Manifest::from_json(&value)
}

/// How thoroughly [`check`] looks at the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Each file exists with the recorded size.
    Sizes,
    /// Sizes and SHA-256 of every byte.
    Hashes,
}

/// Problems with the files a manifest lists (empty: the checkpoint is valid).
pub fn check(dir: &Path, manifest: &Manifest, depth: Depth) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.files {
        if file
            .path
            .split('/')
            .any(|part| part == ".." || part.is_empty())
        {
            problems.push(format!("{}: unsafe path in the manifest", file.path));
            continue;
        }
        let path = dir.join(&file.path);
        match std::fs::metadata(&path) {
            Err(e) => problems.push(format!("{}: {e}", file.path)),
            Ok(meta) if meta.len() != file.size => problems.push(format!(
                "{}: {} bytes, the manifest says {}",
                file.path,
                meta.len(),
                file.size
            )),
            Ok(_) if depth == Depth::Hashes => match hash_file(&path) {
                Err(e) => problems.push(format!("{}: {e}", file.path)),
                Ok((_, digest)) if digest != file.sha256 => {
                    problems.push(format!("{}: SHA-256 does not match (corrupted)", file.path))
                }
                Ok(_) => {}
            },
            Ok(_) => {}
        }
    }
    problems
}

#[cfg(test)]
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
        let back = Manifest::from_json(&manifest.to_json()).unwrap();
        assert_eq!(back, manifest);
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
        let problems = check(&dir, &manifest, Depth::Hashes);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.contains("unsafe path")),
            "{problems:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn foreign_json_and_other_schemas_are_refused() {
        assert!(Manifest::from_json(&json!({"name": "x"})).is_err());
        let mut value = Manifest::default().to_json();
        value["schema"] = json!(99);
        assert!(
            Manifest::from_json(&value)
                .unwrap_err()
                .contains("schema 99")
        );
    }
}
