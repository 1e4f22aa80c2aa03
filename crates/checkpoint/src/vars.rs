//! Writing session variables (chosen per variable at compile time) and
//! loading them back.
//!
//! The kernel generates, for each variable `x` of type `T`:
//! `(&&Probe(&x)).ferrolab_save(&mut writer, "x", "T")`. Method resolution
//! picks [`ViaSerde`] when `T: Serialize` (the receiver matches without
//! auto-deref) and falls back to [`ViaNothing`] otherwise, so a type without
//! `Serialize` is skipped with the reason instead of failing the compile.
//!
//! Each value is borrowed, encoded straight into a buffered file (MessagePack
//! with field names, through `rmp-serde`), hashed in the same pass, flushed and
//! fsynced. A `Serialize` that errors or panics fails that variable only.

use crate::hash::HashingWriter;
use crate::manifest::{FileEntry, Status, Variable};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Where variables go and what happened to each.
pub struct VarWriter {
    dir: PathBuf,
    /// Only decide what could be saved; write nothing.
    dry_run: bool,
    pub variables: Vec<Variable>,
    pub files: Vec<FileEntry>,
}

impl VarWriter {
    /// Writes into `<stage>/vars/`.
    pub fn new(stage: &Path) -> VarWriter {
        VarWriter {
            dir: stage.join("vars"),
            dry_run: false,
            variables: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Decides per variable, writes nothing (`%checkpoint status`).
    pub fn dry_run() -> VarWriter {
        VarWriter {
            dir: PathBuf::new(),
            dry_run: true,
            variables: Vec::new(),
            files: Vec::new(),
        }
    }

    pub fn skip(&mut self, name: &str, ty: &str, reason: &str) {
        self.variables.push(Variable {
            name: name.to_owned(),
            ty: ty.to_owned(),
            status: Status::Skipped,
            reason: Some(reason.to_owned()),
            file: None,
        });
    }

    pub fn save_serde<T: Serialize + ?Sized>(&mut self, name: &str, ty: &str, value: &T) {
        if self.dry_run {
            self.variables.push(Variable {
                name: name.to_owned(),
                ty: ty.to_owned(),
                status: Status::Saved,
                reason: None,
                file: None,
            });
            return;
        }
        let rel = format!("vars/{}.msgpack", file_stem(name));
        let path = self.dir.join(format!("{}.msgpack", file_stem(name)));
        let outcome = write_value(&self.dir, &path, value);
        match outcome {
            Ok((size, sha256)) => {
                self.files.push(FileEntry {
                    path: rel.clone(),
                    size,
                    sha256,
                });
                self.variables.push(Variable {
                    name: name.to_owned(),
                    ty: ty.to_owned(),
                    status: Status::Saved,
                    reason: None,
                    file: Some(rel),
                });
            }
            Err(reason) => {
                let _ = std::fs::remove_file(&path);
                self.variables.push(Variable {
                    name: name.to_owned(),
                    ty: ty.to_owned(),
                    status: Status::Failed,
                    reason: Some(reason),
                    file: None,
                });
            }
        }
    }

    /// The outcome as JSON, for the kernel to read back.
    pub fn report_json(&self) -> String {
        let manifest = crate::Manifest {
            variables: self.variables.clone(),
            files: self.files.clone(),
            ..Default::default()
        };
        manifest.to_json().dump()
    }

    /// Writes [`report_json`](Self::report_json) to `path` (fsynced).
    pub fn write_report(&self, path: &Path) -> std::io::Result<()> {
        let mut file = crate::commit::create_private_file(path)?;
        file.write_all(self.report_json().as_bytes())?;
        file.sync_all()
    }
}

/// Reads back what [`VarWriter::report_json`] wrote (the kernel's side).
pub fn parse_report(text: &str) -> Result<crate::Manifest, String> {
    let value = jzon::parse(text).map_err(|e| format!("it does not parse: {e}"))?;
    crate::Manifest::from_json(&value)
}

/// Variable names are Rust identifiers; keep anything else out of paths.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn write_value<T: Serialize + ?Sized>(
    dir: &Path,
    path: &Path,
    value: &T,
) -> Result<(u64, String), String> {
    crate::commit::create_private_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = crate::commit::create_private_file(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    // A panicking Serialize must not reach the session's panic hook (that
    // would fail the whole save cell): catch it quietly, keep its message.
    let encoded = quietly(|| rmp_serde::encode::write_named(&mut writer, value));
    match encoded {
        Err(message) => {
            return Err(format!("its Serialize implementation panicked: {message}"));
        }
        Ok(Err(error)) => {
            // An I/O failure underneath (a full disk) matters more than the
            // encoder's own wording of it.
            return Err(match writer.io_error() {
                Some(io) => io_reason(io),
                None => format!("its Serialize implementation failed: {error}"),
            });
        }
        Ok(Ok(())) => {}
    }
    writer.flush().map_err(|e| io_reason(&e.to_string()))?;
    let (buffered, size, sha256) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| io_reason(&e.into_error().to_string()))?;
    file.sync_all().map_err(|e| io_reason(&e.to_string()))?;
    Ok((size, sha256))
}

fn io_reason(error: &str) -> String {
    format!("writing failed: {error}")
}

/// Receivers for the compile-time choice (see the module docs).
pub struct Probe<'a, T: ?Sized>(pub &'a T);

pub trait ViaSerde {
    fn ferrolab_save(&self, writer: &mut VarWriter, name: &str, ty: &str);
}

impl<T: Serialize + ?Sized> ViaSerde for &Probe<'_, T> {
    fn ferrolab_save(&self, writer: &mut VarWriter, name: &str, ty: &str) {
        writer.save_serde(name, ty, self.0);
    }
}

pub trait ViaNothing {
    fn ferrolab_save(&self, writer: &mut VarWriter, name: &str, ty: &str);
}

impl<T: ?Sized> ViaNothing for Probe<'_, T> {
    fn ferrolab_save(&self, writer: &mut VarWriter, name: &str, ty: &str) {
        writer.skip(
            name,
            ty,
            "its type does not implement serde::Serialize (derive it, or recreate it after a restore)",
        );
    }
}

/// Runs `f`, turning a panic into `Err(message)` without reaching the
/// session's panic hook (which would fail the whole cell).
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        PANIC_MESSAGE.with(|slot| *slot.borrow_mut() = Some(message));
    }));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    outcome.map_err(|_| {
        PANIC_MESSAGE
            .with(|slot| slot.borrow_mut().take())
            .unwrap_or_default()
    })
}

/// Loads a variable for a restore into a separate slot, so the binding it
/// will replace stays untouched until the load has succeeded: the value, or
/// `None` with `name<TAB>reason` appended to the file `report`.
pub fn load_slot<T: DeserializeOwned>(path: &str, report: &str, name: &str) -> Option<T> {
    let reason = match quietly(|| load::<T>(path)) {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(reason)) => reason,
        Err(panic) => format!("its Deserialize implementation panicked: {panic}"),
    };
    use std::os::unix::fs::OpenOptionsExt;
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(report)
        .and_then(|mut file| writeln!(file, "{name}\t{}", reason.replace(['\n', '\t'], " ")));
    if let Err(error) = appended {
        eprintln!("ferrolab: cannot report why `{name}` was not restored ({reason}): {error}");
    }
    None
}

/// Reads a variable written by [`VarWriter`] (streaming).
pub fn load<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    rmp_serde::decode::from_read(BufReader::with_capacity(1 << 20, file)).map_err(|e| {
        format!(
            "{path} does not decode as this type ({e}); the type may have changed since the save"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct NoSerde;

    struct Panics;
    impl Serialize for Panics {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("boom in serialize")
        }
    }

    #[test]
    // The `&&` is what picks the implementation (see the module docs).
    #[allow(clippy::needless_borrow)]
    fn serializable_values_round_trip_and_others_are_skipped_or_failed() {
        let dir = std::env::temp_dir().join(format!("ferrolab-vars-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut writer = VarWriter::new(&dir);
        let weights: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let table: HashMap<String, i64> = [("a".to_owned(), 1), ("b".to_owned(), -2)].into();
        let none = NoSerde;
        let bad = Panics;
        (&&Probe(&weights)).ferrolab_save(&mut writer, "weights", "Vec<f32>");
        (&&Probe(&table)).ferrolab_save(&mut writer, "table", "HashMap<String, i64>");
        (&&Probe(&none)).ferrolab_save(&mut writer, "none", "NoSerde");
        (&&Probe(&bad)).ferrolab_save(&mut writer, "bad", "Panics");
        let statuses: Vec<_> = writer.variables.iter().map(|v| v.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Saved,
                Status::Saved,
                Status::Skipped,
                Status::Failed
            ]
        );
        assert!(
            writer.variables[3]
                .reason
                .as_ref()
                .unwrap()
                .contains("boom in serialize")
        );
        assert_eq!(writer.files.len(), 2);
        let back: Vec<f32> = load(dir.join("vars/weights.msgpack").to_str().unwrap()).unwrap();
        assert_eq!(back, weights);
        let back: HashMap<String, i64> =
            load(dir.join("vars/table.msgpack").to_str().unwrap()).unwrap();
        assert_eq!(back, table);
        let wrong = load::<String>(dir.join("vars/weights.msgpack").to_str().unwrap());
        assert!(wrong.unwrap_err().contains("does not decode"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
