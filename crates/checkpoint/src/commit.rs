//! Staging and committing a checkpoint, listing the committed ones, and
//! sweeping what crashed saves left behind.
//!
//! Commit order: every data file is fsynced as it is written; then
//! `MANIFEST.json.tmp` is written and fsynced and renamed to `MANIFEST.json`;
//! the staging directory is fsynced, renamed to `ckpt-NNNNNN`, and the root is
//! fsynced. Validity rests on the manifest and its hashes, never on the rename
//! alone (a copying file system, such as a FUSE drive, may not rename
//! atomically).

use crate::crash;
use crate::hash::{HashingWriter, hash_file};
use crate::manifest::{self, FileEntry, MANIFEST, Manifest};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const PREFIX: &str = "ckpt-";
const TMP_PREFIX: &str = ".tmp-ckpt-";
const TRASH_PREFIX: &str = ".trash-";

/// A checkpoint being written. Dropped without [`commit`](Stage::commit), it
/// removes its directory.
pub struct Stage {
    root: PathBuf,
    dir: PathBuf,
    files: Vec<FileEntry>,
    committed: bool,
}

impl Stage {
    /// Creates `root` if needed and a private staging directory in it.
    pub fn begin(root: &Path) -> io::Result<Stage> {
        fs::create_dir_all(root)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = root.join(format!("{TMP_PREFIX}{}-{nanos}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(Stage {
            root: root.to_owned(),
            dir,
            files: Vec::new(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Records a file already written and fsynced inside the stage.
    pub fn add_entry(&mut self, entry: FileEntry) {
        self.files.push(entry);
    }

    /// Writes a small file (`rel` is `/`-separated) and fsyncs it.
    pub fn write_file(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        self.copy_from(&mut &bytes[..], rel)
    }

    /// Copies `source` in (streaming, hashed, fsynced).
    pub fn copy_file(&mut self, source: &Path, rel: &str) -> io::Result<()> {
        let mut file = File::open(source)?;
        self.copy_from(&mut file, rel)
    }

    fn copy_from(&mut self, source: &mut dyn Read, rel: &str) -> io::Result<()> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut writer =
            HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(&path)?));
        io::copy(source, &mut writer)?;
        writer.flush()?;
        let (buffered, size, sha256) = writer.finish();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.files.push(FileEntry {
            path: rel.to_owned(),
            size,
            sha256,
        });
        Ok(())
    }

    /// Makes the checkpoint durable and visible; returns its directory. The
    /// manifest's `name` (`ckpt-NNNNNN`, or `ckpt-NNNNNN-LABEL`) and `files`
    /// are filled in here.
    pub fn commit(mut self, manifest: &mut Manifest, label: Option<&str>) -> io::Result<PathBuf> {
        let name_for = |number: u64| match label {
            Some(label) => format!("{PREFIX}{number:06}-{label}"),
            None => format!("{PREFIX}{number:06}"),
        };
        // Directories created inside the stage (vars/, files/, session/).
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                sync_dir(&entry.path())?;
            }
        }
        crash::point("files-synced");
        manifest.files = self.files.clone();
        let number = next_number(&self.root)?;
        manifest.name = name_for(number);
        let text = serde_json::to_vec_pretty(&manifest.to_json())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let temp = self.dir.join(format!("{MANIFEST}.tmp"));
        {
            let mut file = File::create(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
        }
        crash::point("manifest-temp");
        fs::rename(&temp, self.dir.join(MANIFEST))?;
        sync_dir(&self.dir)?;
        crash::point("manifest-renamed");
        let mut number = number;
        let final_dir = loop {
            let candidate = self.root.join(name_for(number));
            if !candidate.exists() && next_number(&self.root)? <= number {
                break candidate;
            }
            // Another kernel took this number in the meantime.
            number = next_number(&self.root)?.max(number + 1);
            manifest.name = name_for(number);
            let text = serde_json::to_vec_pretty(&manifest.to_json())
                .map_err(|e| io::Error::other(e.to_string()))?;
            replace_file(&self.dir.join(MANIFEST), &text)?;
        };
        fs::rename(&self.dir, &final_dir)?;
        self.committed = true;
        crash::point("dir-renamed");
        sync_dir(&self.root)?;
        crash::point("committed");
        Ok(final_dir)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// fsync on a directory: makes the names in it (renames, new files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// `ckpt-000042` and `ckpt-000042-label` → 42.
fn number_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

fn next_number(root: &Path) -> io::Result<u64> {
    let mut highest = 0;
    for entry in fs::read_dir(root)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(number_of) {
            highest = highest.max(n);
        }
    }
    Ok(highest + 1)
}

/// A committed-looking checkpoint directory and what its manifest says.
#[derive(Debug)]
pub struct Listed {
    pub name: String,
    pub number: u64,
    pub path: PathBuf,
    /// The manifest, or why it cannot be used.
    pub manifest: Result<Manifest, String>,
}

impl Listed {
    pub fn is_valid(&self) -> bool {
        self.manifest.is_ok()
    }
}

/// Every `ckpt-*` directory under `root`, oldest first. A manifest that does
/// not parse, or files of the wrong size (or hash, with `depth`), make the
/// entry invalid with the reason. A missing root lists nothing.
pub fn list(root: &Path, depth: manifest::Depth) -> io::Result<Vec<Listed>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut listed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = number_of(&name) else {
            continue;
        };
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let manifest = manifest::read(&path).and_then(|manifest| {
            let problems = manifest::check(&path, &manifest, depth);
            if problems.is_empty() {
                Ok(manifest)
            } else {
                Err(problems.join("; "))
            }
        });
        listed.push(Listed {
            name,
            number,
            path,
            manifest,
        });
    }
    listed.sort_by_key(|l| l.number);
    Ok(listed)
}

/// Deletes a checkpoint: renamed aside first, so a crash midway never leaves
/// a half-deleted `ckpt-*` that looks like a checkpoint.
pub fn remove(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trash = path.with_file_name(format!("{TRASH_PREFIX}{name}-{}", std::process::id()));
    fs::rename(path, &trash)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    fs::remove_dir_all(&trash)
}

/// Removes staging directories of saves whose process is gone, and leftovers
/// of interrupted deletions. Returns how many it removed.
pub fn sweep(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            match pid {
                Some(pid) => {
                    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                }
                None => false,
            }
        } else {
            name.starts_with(TRASH_PREFIX)
        };
        if stale && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Re-hashes one file (for `verify`).
pub fn rehash(path: &Path) -> io::Result<(u64, String)> {
    hash_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Depth;

    fn temp_root(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "ferrolab-commit-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        root
    }

    fn save(root: &Path, content: &[u8]) -> PathBuf {
        let mut stage = Stage::begin(root).unwrap();
        stage.write_file("vars/x.msgpack", content).unwrap();
        let mut manifest = Manifest {
            origin: "manual".into(),
            ..Manifest::default()
        };
        stage.commit(&mut manifest, None).unwrap()
    }

    #[test]
    fn commits_number_upwards_and_list_validates() {
        let root = temp_root("list");
        let first = save(&root, b"one");
        let second = save(&root, b"two");
        assert!(first.ends_with("ckpt-000001") && second.ends_with("ckpt-000002"));
        let listed = list(&root, Depth::Hashes).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(Listed::is_valid));
        assert_eq!(listed[1].manifest.as_ref().unwrap().name, "ckpt-000002");
        // Flip a byte: the hash check notices, the size check does not.
        fs::write(second.join("vars/x.msgpack"), b"twO").unwrap();
        assert!(list(&root, Depth::Sizes).unwrap()[1].is_valid());
        let listed = list(&root, Depth::Hashes).unwrap();
        let reason = listed[1].manifest.as_ref().unwrap_err();
        assert!(reason.contains("SHA-256"), "{reason}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unfinished_stage_is_never_listed_and_is_removed_on_drop() {
        let root = temp_root("drop");
        save(&root, b"kept");
        {
            let mut stage = Stage::begin(&root).unwrap();
            stage.write_file("vars/y.msgpack", b"half").unwrap();
            assert_eq!(list(&root, Depth::Hashes).unwrap().len(), 1);
        }
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ckpt-000001")]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_manifestless_directory_is_invalid_and_sweep_removes_dead_stages() {
        let root = temp_root("sweep");
        save(&root, b"a");
        fs::create_dir_all(root.join("ckpt-000002/vars")).unwrap();
        let dead = root.join(format!("{TMP_PREFIX}999999999-1"));
        fs::create_dir_all(&dead).unwrap();
        let mine = Stage::begin(&root).unwrap();
        let listed = list(&root, Depth::Sizes).unwrap();
        assert!(listed[0].is_valid());
        assert!(
            listed[1]
                .manifest
                .as_ref()
                .unwrap_err()
                .contains("unfinished")
        );
        assert_eq!(sweep(&root), 1);
        assert!(!dead.exists());
        assert!(mine.path().exists(), "a live stage must not be swept");
        drop(mine);
        // The next number skips past the invalid directory too.
        assert!(save(&root, b"c").ends_with("ckpt-000003"));
        let mut stage = Stage::begin(&root).unwrap();
        stage.write_file("vars/z.msgpack", b"z").unwrap();
        let labelled = stage
            .commit(&mut Manifest::default(), Some("before-lr-change"))
            .unwrap();
        assert!(labelled.ends_with("ckpt-000004-before-lr-change"));
        assert_eq!(list(&root, Depth::Hashes).unwrap()[3].number, 4);
        remove(&root.join("ckpt-000001")).unwrap();
        assert_eq!(list(&root, Depth::Sizes).unwrap().len(), 3);
        fs::remove_dir_all(root).unwrap();
    }
}
