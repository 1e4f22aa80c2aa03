//! Staging and committing a checkpoint, listing the committed ones, and
//! sweeping what crashed saves left behind.
//!
//! Commit order: every data file is fsynced as it is written; then
//! `MANIFEST.json.tmp` is written and fsynced and renamed to `MANIFEST.json`;
//! the staging directory is fsynced, renamed to `ckpt-NNNNNN`, and the root is
//! fsynced. Validity rests on the manifest and its hashes, never on the rename
//! alone (a copying file system, such as a FUSE drive, may not rename
//! atomically).
//!
//! Checkpoints hold every variable and the code journal, so directories are
//! created 0700 and files 0600. A checkpoint is found by its full directory
//! name, its number (`ckpt-000003` or `3`) or the name given at save time
//! (the newest wins when several share it): see [`resolve`].

use crate::crash;
use crate::hash::HashingWriter;
#[cfg(feature = "kernel")]
use crate::manifest;
use crate::manifest::{FileEntry, MANIFEST, Manifest};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const PREFIX: &str = "ckpt-";
const TMP_PREFIX: &str = ".tmp-ckpt-";
const TRASH_PREFIX: &str = ".trash-";

/// Creates `path` (and missing parents) with mode 0700.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Creates a new file with mode 0600 (truncating one that exists).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

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
        create_private_dir_all(root)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = root.join(format!("{TMP_PREFIX}{}-{nanos}", std::process::id()));
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(0o700).create(&dir)?;
        }
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
            create_private_dir_all(parent)?;
        }
        let mut writer = HashingWriter::new(BufWriter::with_capacity(
            1 << 20,
            create_private_file(&path)?,
        ));
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
        let text = manifest.to_json().pretty(2).into_bytes();
        let temp = self.dir.join(format!("{MANIFEST}.tmp"));
        {
            let mut file = create_private_file(&temp)?;
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
            let text = manifest.to_json().pretty(2).into_bytes();
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
        let mut file = create_private_file(&temp)?;
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
pub fn number_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.split('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `ckpt-000042-after50` → `after50`.
pub fn label_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let (_, label) = rest.split_once('-')?;
    (!label.is_empty()).then_some(label)
}

/// Why a name given at save time cannot be used (None: it can). Names that
/// restore reads as something else (`latest`, `best`, a number) are refused.
pub fn label_problem(label: &str) -> Option<String> {
    let valid = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !label.starts_with(['.', '-']);
    if !valid {
        return Some(format!(
            "checkpoint name `{label}`: use letters, digits, '-', '_' and '.' (up to 64, not starting with '.' or '-')"
        ));
    }
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!(
            "checkpoint name `{label}` would be read as a sequence number; add a letter"
        ));
    }
    if matches!(label, "latest" | "best") || label.starts_with(PREFIX) {
        return Some(format!(
            "checkpoint name `{label}` is reserved (restore reads `latest`, `best` and `ckpt-…` specially)"
        ));
    }
    None
}

/// Which checkpoint a name typed by the user means.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Index into the listing.
    Found(usize),
    /// Index of the newest of several checkpoints sharing the name, and how
    /// many share it.
    Newest(usize, usize),
    NotFound,
}

/// Finds `typed` in `listed` (oldest first): the full directory name, the
/// sequence number (`ckpt-000003` or `3`), or the name given at save time,
/// in that order of preference; the newest wins among equal names.
pub fn resolve(listed: &[Listed], typed: &str) -> Resolution {
    if let Some(index) = listed.iter().position(|l| l.name == typed) {
        return Resolution::Found(index);
    }
    let wanted = typed
        .strip_prefix(PREFIX)
        .unwrap_or(typed)
        .parse::<u64>()
        .ok()
        .filter(|_| {
            typed
                .trim_start_matches(PREFIX)
                .bytes()
                .all(|b| b.is_ascii_digit())
        });
    if let Some(number) = wanted
        && let Some(index) = listed.iter().rposition(|l| l.number == number)
    {
        return Resolution::Found(index);
    }
    let same: Vec<usize> = listed
        .iter()
        .enumerate()
        .filter(|(_, l)| label_of(&l.name) == Some(typed))
        .map(|(i, _)| i)
        .collect();
    match same.as_slice() {
        [] => Resolution::NotFound,
        [one] => Resolution::Found(*one),
        [.., newest] => Resolution::Newest(*newest, same.len()),
    }
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
/// not parse or validate, or files of the wrong size (or hash, with `depth`),
/// make the entry invalid with the reason. A missing root lists nothing.
#[cfg(feature = "kernel")]
pub fn list(root: &Path, depth: manifest::Depth) -> io::Result<Vec<Listed>> {
    list_with(root, depth, &|| false)
}

/// [`list`], asking `cancel` while hashing; a cancelled listing is an
/// `Interrupted` error.
#[cfg(feature = "kernel")]
pub fn list_with(
    root: &Path,
    depth: manifest::Depth,
    cancel: &dyn Fn() -> bool,
) -> io::Result<Vec<Listed>> {
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
            if manifest.name != name {
                return Err(format!(
                    "the manifest names {:?}, not this folder",
                    manifest.name
                ));
            }
            let problems = manifest::check(&path, &manifest, depth, cancel);
            if problems.is_empty() {
                Ok(manifest)
            } else {
                Err(problems.join("; "))
            }
        });
        if cancel() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted while checking checkpoints",
            ));
        }
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

// The tests use what only the kernel has (listing, verifying); every
// workspace test build turns `kernel` on.
#[cfg(all(test, feature = "kernel"))]
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
    fn names_resolve_as_typed_and_the_newest_of_equal_names_wins() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_root("resolve");
        let labelled = |label: &str| {
            let mut stage = Stage::begin(&root).unwrap();
            stage
                .write_file("vars/x.msgpack", label.as_bytes())
                .unwrap();
            stage.commit(&mut Manifest::default(), Some(label)).unwrap()
        };
        let first = labelled("first");
        save(&root, b"plain");
        let again = labelled("first");
        let listed = list(&root, Depth::Hashes).unwrap();
        assert_eq!(resolve(&listed, "ckpt-000001-first"), Resolution::Found(0));
        assert_eq!(resolve(&listed, "ckpt-000002"), Resolution::Found(1));
        assert_eq!(resolve(&listed, "2"), Resolution::Found(1));
        assert_eq!(resolve(&listed, "first"), Resolution::Newest(2, 2));
        assert_eq!(resolve(&listed, "second"), Resolution::NotFound);
        assert_eq!(resolve(&listed, "9"), Resolution::NotFound);
        assert!(again.ends_with("ckpt-000003-first"));
        // Private: the checkpoint holds every variable and the code journal.
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&first), 0o700);
        assert_eq!(mode(&first.join("vars")), 0o700);
        assert_eq!(mode(&first.join("vars/x.msgpack")), 0o600);
        assert_eq!(mode(&first.join(MANIFEST)), 0o600);
        assert!(label_problem("after50").is_none());
        for bad in ["3", "latest", "best", "ckpt-1", "../x", ".hidden", ""] {
            assert!(label_problem(bad).is_some(), "{bad}");
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_data_file_swapped_for_a_symlink_to_dev_zero_is_invalid_at_once() {
        let root = temp_root("symlink");
        let saved = save(&root, b"0123456789");
        let data = saved.join("vars/x.msgpack");
        fs::remove_file(&data).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &data).unwrap();
        for depth in [Depth::Sizes, Depth::Hashes] {
            let listed = list(&root, depth).unwrap();
            let reason = listed[0].manifest.as_ref().unwrap_err();
            assert!(reason.contains("not a regular file"), "{reason}");
        }
        // A symlinked folder on the way is refused too.
        fs::remove_file(&data).unwrap();
        let elsewhere = root.join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("x.msgpack"), b"0123456789").unwrap();
        fs::remove_dir(saved.join("vars")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, saved.join("vars")).unwrap();
        let listed = list(&root, Depth::Hashes).unwrap();
        assert!(listed[0].manifest.as_ref().unwrap_err().contains("symlink"));
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
