//! `--unzip`: extracts a downloaded archive, all or nothing, without ever
//! writing outside the destination or over the user's folders.
//!
//! Before anything is written, every entry is checked:
//! - its name: an absolute name (`/etc/x`, `C:\x`), one with a `..` part, one
//!   with a NUL, and a symbolic link are refused, naming the entry (never
//!   re-rooted or "cleaned");
//! - the archive as a whole: a name that is both a file and a folder is
//!   refused; the declared sizes must fit the [`Limits`] (total bytes, and the
//!   expansion ratio over the archive's own size above [`RATIO_FLOOR`]);
//! - the destination, without following any link in it: a symbolic link on
//!   an entry's path, a folder where the archive has a file (or a file where
//!   it has a folder) is refused, naming the entry. Only a regular file is
//!   ever replaced (by a regular file), as the official CLI does.
//!
//! Entries are then extracted into a private staging folder inside the
//! destination (several threads, one archive reader each), each checked
//! against its CRC-32 and its declared size (reading stops as soon as an
//! entry yields more than it declared, so a lying header cannot fill the
//! disk), and moved into place only when all of them are good. The move walks
//! the destination with `openat(O_NOFOLLOW | O_DIRECTORY)` per folder and
//! `renameat` into those folder handles, so a link that appears meanwhile is
//! not followed either. On any failure the staging folder is removed, so
//! nothing half-extracted is left, and the zip is kept; the caller deletes
//! the zip only after success.

use crate::client::Cancel;
use crate::env::Env;
use crate::errors::KaggleError;
use crate::tables::size;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RenameFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The ratio limit applies only to archives that expand to more than this:
/// a small zip of zeros is harmless, a gigabyte from a megabyte is a bomb.
pub const RATIO_FLOOR: u64 = 64_000_000;

/// How much an archive may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of all entries (`None`: no limit).
    pub max_bytes: Option<u64>,
    /// Total bytes over the archive's size, above [`RATIO_FLOOR`] (`None`: no limit).
    pub max_ratio: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: None,
            max_ratio: Some(100),
        }
    }
}

impl Limits {
    /// The limits set in `env`: `FERROLAB_UNZIP_MAX_BYTES` (bytes, or with a
    /// k, M, G or T unit; default none) and `FERROLAB_UNZIP_MAX_RATIO`
    /// (default 100; `0` or `none` turns it off).
    pub fn from_env(env: &Env) -> Result<Limits, KaggleError> {
        let mut limits = Limits::default();
        let bad = |name: &str, value: &str, wanted: &str| {
            KaggleError::other(
                "UsageError",
                format!("{name}={value} is not {wanted}; fix it with %env {name}=..."),
            )
        };
        if let Some(value) = env.get("FERROLAB_UNZIP_MAX_BYTES") {
            limits.max_bytes = Some(parse_bytes(value).ok_or_else(|| {
                bad(
                    "FERROLAB_UNZIP_MAX_BYTES",
                    value,
                    "a size such as 50G or 2000000",
                )
            })?);
        }
        if let Some(value) = env.get("FERROLAB_UNZIP_MAX_RATIO") {
            limits.max_ratio = match value.trim() {
                "0" | "none" => None,
                number => Some(number.parse::<u64>().map_err(|_| {
                    bad(
                        "FERROLAB_UNZIP_MAX_RATIO",
                        value,
                        "a whole number such as 100 (or none)",
                    )
                })?),
            };
        }
        Ok(limits)
    }
}

#[derive(Debug)]
pub enum UnzipError {
    NotZip(String),
    /// An entry whose name or kind is refused.
    Unsafe {
        entry: String,
        why: String,
    },
    /// An entry that would replace or write through something in the
    /// destination (or clash with another entry).
    Conflict {
        entry: String,
        problem: String,
    },
    TooBig {
        total: u64,
        archive: u64,
        limit: String,
    },
    Corrupt {
        entry: String,
        reason: String,
    },
    Io(String),
    Interrupted,
}

impl UnzipError {
    /// The message, naming the archive and what was left.
    pub fn describe(&self, zip: &Path, dest: &Path) -> String {
        let zip_name = zip.display();
        match self {
            UnzipError::NotZip(reason) => format!(
                "{zip_name} is not a valid zip file ({reason}). It is kept, and running the command again downloads it again."
            ),
            UnzipError::Unsafe { entry, why } => format!(
                "Refused to extract {zip_name}: entry `{entry}` {why}. Nothing was extracted; the zip is kept."
            ),
            UnzipError::Conflict { entry, problem } => format!(
                "Refused to extract {zip_name}: entry `{entry}`: {problem}. Nothing was extracted or changed in {}; the zip is kept.",
                dest.display()
            ),
            UnzipError::TooBig {
                total,
                archive,
                limit,
            } => format!(
                "Refused to extract {zip_name}: its entries would expand to {} ({}× the {} archive), more than {limit} (a zip bomb?). Nothing was extracted; the zip is kept. To allow it, raise FERROLAB_UNZIP_MAX_RATIO or FERROLAB_UNZIP_MAX_BYTES with %env.",
                size(*total),
                total / (*archive).max(1),
                size(*archive)
            ),
            UnzipError::Corrupt { entry, reason } => format!(
                "{zip_name} is corrupt: entry `{entry}`: {reason}. Nothing was extracted; the zip is kept, and running the command again downloads it again."
            ),
            UnzipError::Io(reason) => format!(
                "Could not extract {zip_name}: {reason}. Nothing was extracted; the zip is kept."
            ),
            UnzipError::Interrupted => format!(
                "Interrupted while extracting {zip_name}: nothing was extracted; the zip is kept."
            ),
        }
    }

    /// True when the archive's bytes are bad (so the download is no good).
    pub fn archive_is_damaged(&self) -> bool {
        matches!(self, UnzipError::NotZip(_) | UnzipError::Corrupt { .. })
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    name: String,
    path: PathBuf,
    is_dir: bool,
    size: u64,
}

fn open(zip: &Path) -> Result<zip::ZipArchive<File>, UnzipError> {
    let file = File::open(zip).map_err(|error| UnzipError::Io(error.to_string()))?;
    zip::ZipArchive::new(file).map_err(|error| UnzipError::NotZip(error.to_string()))
}

/// The relative path an entry name stands for, or why it is refused. Both
/// `/` and `\` separate parts (archives made on Windows use `\`).
fn entry_path(name: &str) -> Result<PathBuf, String> {
    if name.contains('\0') {
        return Err("has a NUL in its name".into());
    }
    let bytes = name.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if name.starts_with(['/', '\\']) || drive {
        return Err("has an absolute path".into());
    }
    let mut path = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                return Err("would be written outside the destination (it has a `..` part)".into());
            }
            part => path.push(part),
        }
    }
    // Whatever `Path` makes of it must be plain names only.
    if !path
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return Err("has a path that is not a plain relative one".into());
    }
    Ok(path)
}

/// Checks every name and the archive's shape; nothing is written. A name
/// given twice keeps its last entry (as `unzip` and Python's `zipfile` do).
fn plan(archive: &mut zip::ZipArchive<File>) -> Result<Vec<Entry>, UnzipError> {
    let mut by_path: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    for index in 0..archive.len() {
        let file = archive
            .by_index_raw(index)
            .map_err(|error| UnzipError::NotZip(error.to_string()))?;
        let name = file
            .name()
            .map(|name| name.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(file.name_raw()).into_owned());
        let path = entry_path(&name).map_err(|why| UnzipError::Unsafe {
            entry: name.clone(),
            why,
        })?;
        if file.is_symlink() {
            return Err(UnzipError::Unsafe {
                entry: name,
                why: "is a symbolic link".into(),
            });
        }
        if path.as_os_str().is_empty() {
            continue;
        }
        let entry = Entry {
            index,
            name,
            path: path.clone(),
            is_dir: file.is_dir(),
            size: if file.is_dir() { 0 } else { file.size() },
        };
        if let Some(earlier) = by_path.get(&path)
            && earlier.is_dir != entry.is_dir
        {
            return Err(UnzipError::Conflict {
                entry: entry.name,
                problem: "the archive has it both as a file and as a folder".into(),
            });
        }
        by_path.insert(path, entry);
    }
    // Every folder some entry lies in must not also be a file entry.
    let mut folders = BTreeSet::new();
    for path in by_path.keys() {
        folders.extend(path.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Some(clash) = by_path
        .values()
        .find(|entry| !entry.is_dir && folders.contains(&entry.path))
    {
        return Err(UnzipError::Conflict {
            entry: clash.name.clone(),
            problem: "the archive has it both as a file and as a folder".into(),
        });
    }
    let mut entries: Vec<Entry> = by_path.into_values().collect();
    entries.sort_by_key(|entry| entry.index);
    Ok(entries)
}

/// Refuses an archive whose declared sizes exceed `limits`.
fn check_limits(entries: &[Entry], archive: u64, limits: Limits) -> Result<u64, UnzipError> {
    let total = entries
        .iter()
        .fold(0u64, |sum, entry| sum.saturating_add(entry.size));
    let too_big = |limit: String| UnzipError::TooBig {
        total,
        archive,
        limit,
    };
    if let Some(max) = limits.max_bytes
        && total > max
    {
        return Err(too_big(format!(
            "the limit of {} (FERROLAB_UNZIP_MAX_BYTES)",
            size(max)
        )));
    }
    if let Some(ratio) = limits.max_ratio
        && total > RATIO_FLOOR
        && total / archive.max(1) >= ratio
    {
        return Err(too_big(format!(
            "the limit of {ratio}× (FERROLAB_UNZIP_MAX_RATIO) for archives that expand beyond {}",
            size(RATIO_FLOOR)
        )));
    }
    Ok(total)
}

/// What is at `name` in the folder `dir`, links not followed.
fn kind_at(dir: impl AsFd, name: &Path) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Opens the folder `name` in `dir`, refusing a link (`O_NOFOLLOW`).
fn open_dir_at(dir: impl AsFd, name: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_dest(dest: &Path) -> Result<OwnedFd, UnzipError> {
    rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|error| UnzipError::Io(format!("{}: {error}", dest.display())))
}

/// Why `kind` at `shown` cannot take `entry`, if it cannot.
fn clash(kind: FileType, entry_is_dir: bool, shown: &Path) -> Option<String> {
    let shown = shown.display();
    match kind {
        FileType::Symlink => Some(format!(
            "{shown} is a symbolic link, and ferrolab never writes through or replaces a link in the destination"
        )),
        FileType::Directory if entry_is_dir => None,
        FileType::Directory => Some(format!(
            "{shown} is a folder and the archive has a file there; ferrolab never replaces a folder with a file"
        )),
        FileType::RegularFile if !entry_is_dir => None,
        FileType::RegularFile => Some(format!(
            "{shown} is a file and the archive has a folder there"
        )),
        _ => Some(format!("{shown} is not a regular file or folder")),
    }
}

/// Checks the destination for every entry, following no link: every folder
/// on the way must be missing or a real folder, the last part missing or of
/// the entry's kind. `zip_name` (the archive itself) may not be an entry.
fn check_destination(
    dest: &Path,
    dest_fd: &OwnedFd,
    entries: &[Entry],
    zip_name: &Path,
) -> Result<(), UnzipError> {
    let io = |error: io::Error| UnzipError::Io(format!("{}: {error}", dest.display()));
    // Folders already seen to be real folders or missing (then so is all below).
    let mut real: BTreeSet<PathBuf> = BTreeSet::new();
    let mut missing: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in entries {
        if entry.path == zip_name {
            return Err(UnzipError::Conflict {
                entry: entry.name.clone(),
                problem: "it has the name of the archive being extracted".into(),
            });
        }
        let mut folders: Vec<&Path> = entry.path.ancestors().skip(1).collect();
        folders.reverse();
        let mut gone = false;
        for folder in folders.into_iter().filter(|f| !f.as_os_str().is_empty()) {
            if missing.contains(folder) {
                gone = true;
                break;
            }
            if real.contains(folder) {
                continue;
            }
            // Its parents are real folders, so only its own last part can be a link.
            match kind_at(dest_fd, folder).map_err(io)? {
                None => {
                    missing.insert(folder.to_path_buf());
                    gone = true;
                    break;
                }
                Some(FileType::Directory) => {
                    real.insert(folder.to_path_buf());
                }
                Some(kind) => {
                    return Err(UnzipError::Conflict {
                        entry: entry.name.clone(),
                        problem: clash(kind, true, &dest.join(folder)).unwrap_or_default(),
                    });
                }
            }
        }
        if gone {
            continue;
        }
        if let Some(kind) = kind_at(dest_fd, &entry.path).map_err(io)?
            && let Some(problem) = clash(kind, entry.is_dir, &dest.join(&entry.path))
        {
            return Err(UnzipError::Conflict {
                entry: entry.name.clone(),
                problem,
            });
        }
    }
    Ok(())
}

/// Copies one entry to `target`, checking its CRC-32 and size; stops as soon
/// as it yields more than its declared size.
fn extract_one(
    archive: &mut zip::ZipArchive<File>,
    entry: &Entry,
    target: &Path,
    cancel: &Cancel,
) -> Result<u64, UnzipError> {
    let corrupt = |reason: String| UnzipError::Corrupt {
        entry: entry.name.clone(),
        reason,
    };
    let mut file = archive
        .by_index(entry.index)
        .map_err(|error| corrupt(error.to_string()))?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|error| UnzipError::Io(error.to_string()))?;
    }
    let expected_crc = file.crc32();
    let expected_size = entry.size;
    let mut out = File::create(target)
        .map_err(|error| UnzipError::Io(format!("{}: {error}", target.display())))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        if cancel.is_set() {
            return Err(UnzipError::Interrupted);
        }
        let count = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(corrupt(error.to_string())),
        };
        written += count as u64;
        if written > expected_size {
            return Err(corrupt(format!(
                "it holds more than the {expected_size} bytes it declares"
            )));
        }
        hasher.update(&buffer[..count]);
        out.write_all(&buffer[..count])
            .map_err(|error| UnzipError::Io(format!("{}: {error}", target.display())))?;
    }
    if written != expected_size {
        return Err(corrupt(format!(
            "{written} bytes instead of {expected_size}"
        )));
    }
    let crc = hasher.finalize();
    if crc != expected_crc {
        return Err(corrupt(format!(
            "CRC-32 {crc:08x} does not match the recorded {expected_crc:08x}"
        )));
    }
    Ok(written)
}

/// Moves everything in the staging folder `from` into the folder `to`,
/// merging folders. Nothing in `to` is followed: each folder is opened with
/// `O_NOFOLLOW`, each item renamed into that handle; an existing regular
/// file is replaced, anything else in the way is a [`UnzipError::Conflict`].
fn move_into(from: &Path, to: &OwnedFd, shown: &Path, rel: &Path) -> Result<(), UnzipError> {
    let io = |error: io::Error| UnzipError::Io(format!("{}: {error}", shown.display()));
    for item in fs::read_dir(from).map_err(io)? {
        let item = item.map_err(io)?;
        let name = PathBuf::from(item.file_name());
        let source = item.path();
        let is_dir = item.file_type().map_err(io)?.is_dir();
        let entry = rel.join(&name);
        let conflict = |problem: String| UnzipError::Conflict {
            entry: entry.display().to_string(),
            problem,
        };
        match kind_at(to, &name).map_err(io)? {
            None => {
                match rustix::fs::renameat_with(CWD, &source, to, &name, RenameFlags::NOREPLACE) {
                    Ok(()) => {}
                    // Filesystems without RENAME_NOREPLACE: it was missing just now.
                    Err(rustix::io::Errno::INVAL) => rustix::fs::renameat(CWD, &source, to, &name)
                        .map_err(|error| io(error.into()))?,
                    Err(rustix::io::Errno::EXIST) => {
                        return Err(conflict(format!(
                            "{} appeared while extracting",
                            shown.join(&name).display()
                        )));
                    }
                    Err(error) => return Err(io(error.into())),
                }
            }
            Some(FileType::Directory) if is_dir => {
                let inner = open_dir_at(to, &name).map_err(|error| {
                    conflict(format!("{}: {error}", shown.join(&name).display()))
                })?;
                move_into(&source, &inner, &shown.join(&name), &entry)?;
            }
            Some(FileType::RegularFile) if !is_dir => {
                rustix::fs::renameat(CWD, &source, to, &name).map_err(|error| io(error.into()))?
            }
            Some(kind) => {
                return Err(conflict(
                    clash(kind, is_dir, &shown.join(&name)).unwrap_or_default(),
                ));
            }
        }
    }
    Ok(())
}

/// Extracts `zip` into `dest`, all or nothing (see the module doc).
pub fn extract(
    zip: &Path,
    dest: &Path,
    limits: Limits,
    cancel: &Cancel,
) -> Result<Extracted, UnzipError> {
    let mut archive = open(zip)?;
    let entries = plan(&mut archive)?;
    let archive_size = fs::metadata(zip)
        .map_err(|error| UnzipError::Io(error.to_string()))?
        .len();
    check_limits(&entries, archive_size, limits)?;
    fs::create_dir_all(dest).map_err(|error| UnzipError::Io(error.to_string()))?;
    let dest_fd = open_dest(dest)?;
    let zip_name = PathBuf::from(zip.file_name().unwrap_or_default());
    let zip_rel = if zip.parent() == Some(dest) {
        zip_name.clone()
    } else {
        PathBuf::new()
    };
    check_destination(dest, &dest_fd, &entries, &zip_rel)?;
    let staging_name = format!(".{}.unzipping-{}", zip_name.display(), std::process::id());
    let staging = dest.join(&staging_name);
    if kind_at(&dest_fd, Path::new(&staging_name)).ok().flatten() == Some(FileType::Directory) {
        let _ = fs::remove_dir_all(&staging);
    }
    rustix::fs::mkdirat(&dest_fd, staging_name.as_str(), Mode::from_raw_mode(0o700))
        .map_err(|error| UnzipError::Io(format!("{}: {error}", staging.display())))?;
    let result = extract_all(zip, archive, &entries, &staging, cancel).and_then(|extracted| {
        move_into(&staging, &dest_fd, dest, Path::new("")).map(|()| extracted)
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

fn extract_all(
    zip: &Path,
    archive: zip::ZipArchive<File>,
    entries: &[Entry],
    staging: &Path,
    cancel: &Cancel,
) -> Result<Extracted, UnzipError> {
    for entry in entries.iter().filter(|entry| entry.is_dir) {
        fs::create_dir_all(staging.join(&entry.path))
            .map_err(|error| UnzipError::Io(error.to_string()))?;
    }
    let files: Vec<&Entry> = entries.iter().filter(|entry| !entry.is_dir).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<UnzipError>> = Mutex::new(None);
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let first = Mutex::new(Some(archive));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let reader = first.lock().ok().and_then(|mut slot| slot.take());
                let mut archive = match reader.map_or_else(|| open(zip), Ok) {
                    Ok(archive) => archive,
                    Err(error) => {
                        stop.store(true, Ordering::SeqCst);
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(error);
                        return;
                    }
                };
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(entry) = files.get(index) else {
                        return;
                    };
                    match extract_one(&mut archive, entry, &staging.join(&entry.path), cancel) {
                        Ok(count) => {
                            bytes.fetch_add(count, Ordering::SeqCst);
                        }
                        Err(error) => {
                            stop.store(true, Ordering::SeqCst);
                            failure
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(error);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(error);
    }
    Ok(Extracted {
        files: files.len(),
        bytes: bytes.into_inner(),
    })
}

/// A byte count as `FERROLAB_UNZIP_MAX_BYTES` takes it: digits with an
/// optional decimal unit `k`, `M`, `G` or `T` (a trailing `B` is allowed).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix(['B', 'b'])
        .filter(|rest| rest.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(text);
    let (digits, multiplier) = match text.char_indices().last()? {
        (at, 'k' | 'K') => (&text[..at], 1_000),
        (at, 'm' | 'M') => (&text[..at], 1_000_000),
        (at, 'g' | 'G') => (&text[..at], 1_000_000_000),
        (at, 't' | 'T') => (&text[..at], 1_000_000_000_000),
        _ => (text, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use zip::write::SimpleFileOptions;

    fn never() -> Cancel {
        Cancel::never()
    }

    fn run(zip: &Path, dest: &Path) -> Result<Extracted, UnzipError> {
        extract(zip, dest, Limits::default(), &never())
    }

    /// A zip of `(name, bytes)` entries, deflated; a name ending in `/` is a folder.
    pub fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut cursor = io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut cursor);
        for (name, bytes) in entries {
            if name.ends_with('/') {
                writer
                    .add_directory(*name, SimpleFileOptions::default())
                    .unwrap();
            } else {
                writer
                    .start_file(
                        *name,
                        SimpleFileOptions::default()
                            .compression_method(zip::CompressionMethod::Deflated),
                    )
                    .unwrap();
                writer.write_all(bytes).unwrap();
            }
        }
        writer.finish().unwrap();
        cursor.into_inner()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = walk(dir)
            .into_iter()
            .map(|path| path.strip_prefix(dir).unwrap().display().to_string())
            .collect();
        names.sort();
        names
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for item in fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                all.extend(walk(&path));
            } else {
                all.push(path);
            }
        }
        all
    }

    #[test]
    fn extracts_everything_and_merges_into_existing_dirs() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("data.zip");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(
            &zip,
            make_zip(&[
                ("train.csv", b"a,b\n1,2\n"),
                ("images/", b""),
                ("images/0.bin", &big),
                ("images/1.bin", b"x"),
            ]),
        )
        .unwrap();
        let dest = temp.path().join("out");
        fs::create_dir_all(dest.join("images")).unwrap();
        fs::write(dest.join("images/keep.txt"), "mine").unwrap();
        fs::write(dest.join("train.csv"), "old").unwrap();
        let extracted = run(&zip, &dest).unwrap();
        assert_eq!(extracted.files, 3);
        assert_eq!(extracted.bytes, 8 + 300_000 + 1);
        assert_eq!(
            listing(&dest),
            vec![
                "images/0.bin",
                "images/1.bin",
                "images/keep.txt",
                "train.csv"
            ]
        );
        assert_eq!(fs::read(dest.join("images/0.bin")).unwrap(), big);
        // A regular file is replaced, as the official CLI does.
        assert_eq!(fs::read(dest.join("train.csv")).unwrap(), b"a,b\n1,2\n");
    }

    #[test]
    fn zip_slip_is_refused_before_anything_is_written() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("evil.zip");
        fs::write(
            &zip,
            make_zip(&[("fine.txt", b"ok"), ("../evil.txt", b"gotcha")]),
        )
        .unwrap();
        let dest = temp.path().join("out");
        let error = run(&zip, &dest).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Unsafe { entry, .. } if entry == "../evil.txt"),
            "{error:?}"
        );
        let text = error.describe(&zip, &dest);
        assert!(
            text.contains("`../evil.txt` would be written outside"),
            "{text}"
        );
        assert!(!temp.path().join("evil.txt").exists());
        assert!(!dest.join("fine.txt").exists());
        assert!(zip.exists());
    }

    #[test]
    fn absolute_and_odd_names_are_refused_not_rerooted() {
        for name in [
            "/etc/evil.txt",
            "\\evil.txt",
            "C:\\evil.txt",
            "c:evil.txt",
            "a/../../evil.txt",
            "a/../b.txt",
            "a\\..\\..\\evil.txt",
        ] {
            let temp = tempfile::tempdir().unwrap();
            let zip = temp.path().join("a.zip");
            fs::write(&zip, make_zip(&[("fine.txt", b"ok"), (name, b"gotcha")])).unwrap();
            let dest = temp.path().join("out");
            let error = run(&zip, &dest).unwrap_err();
            assert!(
                matches!(&error, UnzipError::Unsafe { entry, .. } if entry == name),
                "{name}: {error:?}"
            );
            assert!(
                error.describe(&zip, &dest).contains(&format!("`{name}`")),
                "{name}"
            );
            assert!(!dest.exists() || listing(&dest).is_empty(), "{name}");
            assert!(!dest.join("etc").exists() && !dest.join("evil.txt").exists());
        }
        // Plain names with Windows separators are fine.
        assert_eq!(
            entry_path("images\\0.png").unwrap(),
            PathBuf::from("images/0.png")
        );
        assert_eq!(entry_path("./a//b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn a_file_entry_never_replaces_a_user_folder() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("a.zip");
        fs::write(
            &zip,
            make_zip(&[("other.txt", b"x"), ("mydir", b"plain file")]),
        )
        .unwrap();
        let dest = temp.path().join("out");
        fs::create_dir_all(dest.join("mydir")).unwrap();
        fs::write(dest.join("mydir/precious.txt"), "precious").unwrap();
        let error = run(&zip, &dest).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Conflict { entry, .. } if entry == "mydir"),
            "{error:?}"
        );
        let text = error.describe(&zip, &dest);
        assert!(text.contains("entry `mydir`"), "{text}");
        assert!(
            text.contains("never replaces a folder with a file"),
            "{text}"
        );
        assert_eq!(
            fs::read_to_string(dest.join("mydir/precious.txt")).unwrap(),
            "precious"
        );
        assert_eq!(listing(&dest), vec!["mydir/precious.txt"]);
        // And a folder entry never replaces a file.
        fs::write(&zip, make_zip(&[("notes/", b""), ("notes/a.txt", b"x")])).unwrap();
        fs::write(dest.join("notes"), "my notes").unwrap();
        let error = run(&zip, &dest).unwrap_err();
        assert!(matches!(&error, UnzipError::Conflict { .. }), "{error:?}");
        assert_eq!(fs::read_to_string(dest.join("notes")).unwrap(), "my notes");
    }

    #[test]
    fn a_link_in_the_destination_is_never_followed() {
        let temp = tempfile::tempdir().unwrap();
        let elsewhere = temp.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        let dest = temp.path().join("out");
        fs::create_dir_all(&dest).unwrap();
        symlink(&elsewhere, dest.join("images")).unwrap();
        symlink(elsewhere.join("target.txt"), dest.join("link.txt")).unwrap();
        fs::write(elsewhere.join("target.txt"), "theirs").unwrap();
        let zip = temp.path().join("a.zip");
        for name in ["images/pwn.txt", "link.txt", "images/"] {
            fs::write(&zip, make_zip(&[("ok.txt", b"ok"), (name, b"pwned")])).unwrap();
            let error = run(&zip, &dest).unwrap_err();
            assert!(
                matches!(&error, UnzipError::Conflict { entry, problem } if entry == name && problem.contains("symbolic link")),
                "{name}: {error:?}"
            );
            assert_eq!(listing(&elsewhere), vec!["target.txt"], "{name}");
            assert_eq!(
                fs::read_to_string(elsewhere.join("target.txt")).unwrap(),
                "theirs"
            );
            assert!(!dest.join("ok.txt").exists(), "{name}");
        }
        // A link that appears after the check is not followed by the move either.
        let staged = temp.path().join("staged");
        fs::create_dir_all(staged.join("images")).unwrap();
        fs::write(staged.join("images/pwn.txt"), "pwned").unwrap();
        let dest_fd = open_dest(&dest).unwrap();
        let error = move_into(&staged, &dest_fd, &dest, Path::new("")).unwrap_err();
        assert!(matches!(&error, UnzipError::Conflict { .. }), "{error:?}");
        assert_eq!(listing(&elsewhere), vec!["target.txt"]);
    }

    #[test]
    fn a_name_that_is_both_file_and_folder_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("a.zip");
        fs::write(&zip, make_zip(&[("x", b"file"), ("x/y.txt", b"inner")])).unwrap();
        let dest = temp.path().join("out");
        let error = run(&zip, &dest).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Conflict { entry, .. } if entry == "x"),
            "{error:?}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn an_entry_named_like_the_archive_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("data.zip");
        fs::write(&zip, make_zip(&[("data.zip", b"inner")])).unwrap();
        let error = run(&zip, temp.path()).unwrap_err();
        assert!(matches!(&error, UnzipError::Conflict { .. }), "{error:?}");
        assert!(zip.exists());
    }

    #[test]
    fn bombs_are_refused_by_ratio_or_size_and_limits_are_configurable() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("bomb.zip");
        let zeros = vec![0u8; (RATIO_FLOOR + (1 << 20)) as usize];
        fs::write(&zip, make_zip(&[("zeros.bin", &zeros)])).unwrap();
        let archive = fs::metadata(&zip).unwrap().len();
        assert!(archive < 1 << 20, "{archive}");
        let dest = temp.path().join("out");
        let error = run(&zip, &dest).unwrap_err();
        assert!(
            matches!(&error, UnzipError::TooBig { total, .. } if *total == zeros.len() as u64),
            "{error:?}"
        );
        let text = error.describe(&zip, &dest);
        assert!(text.contains("FERROLAB_UNZIP_MAX_RATIO"), "{text}");
        assert!(!dest.exists() || listing(&dest).is_empty());
        // Raised ratio: it extracts.
        let generous = Limits {
            max_bytes: None,
            max_ratio: Some(1_000_000),
        };
        assert!(extract(&zip, &dest, generous, &never()).is_ok());
        assert_eq!(
            fs::metadata(dest.join("zeros.bin")).unwrap().len(),
            zeros.len() as u64
        );
        // A small, very compressible archive is fine by default.
        fs::write(&zip, make_zip(&[("small.bin", &vec![0u8; 1 << 20])])).unwrap();
        assert!(run(&zip, &dest).is_ok());
        // The size limit.
        let tight = Limits {
            max_bytes: Some(1000),
            max_ratio: None,
        };
        let error = extract(&zip, &dest, tight, &never()).unwrap_err();
        assert!(
            error
                .describe(&zip, &dest)
                .contains("FERROLAB_UNZIP_MAX_BYTES"),
            "{error:?}"
        );
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("20G"), Some(20_000_000_000));
        assert_eq!(parse_bytes("5 MB"), Some(5_000_000));
        assert_eq!(parse_bytes("1kb"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes(""), None);
    }

    /// Rewrites the uncompressed size of the entry `name` in both headers.
    fn lie_about_size(bytes: &mut [u8], name: &[u8], size: u32) {
        let mut at = 0;
        while let Some(found) = bytes[at..].windows(name.len()).position(|w| w == name) {
            let start = at + found;
            // Local header: name at 30, size at 22; central: name at 46, size at 24.
            if start >= 30 && bytes[start - 30..start - 26] == *b"PK\x03\x04" {
                bytes[start - 8..start - 4].copy_from_slice(&size.to_le_bytes());
            } else if start >= 46 && bytes[start - 46..start - 42] == *b"PK\x01\x02" {
                bytes[start - 22..start - 18].copy_from_slice(&size.to_le_bytes());
            }
            at = start + 1;
        }
    }

    #[test]
    fn an_entry_yielding_more_than_it_declares_is_stopped_and_removed() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("liar.zip");
        let mut bytes = make_zip(&[("ok.txt", b"fine"), ("liar.bin", &vec![7u8; 5 << 20])]);
        lie_about_size(&mut bytes, b"liar.bin", 1000);
        fs::write(&zip, &bytes).unwrap();
        let dest = temp.path().join("out");
        let error = run(&zip, &dest).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Corrupt { entry, .. } if entry == "liar.bin"),
            "{error:?}"
        );
        assert!(error.archive_is_damaged());
        assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));
    }

    #[test]
    fn a_corrupt_entry_leaves_nothing_behind() {
        let temp = tempfile::tempdir().unwrap();
        let zip = temp.path().join("bad.zip");
        let payload: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut bytes = make_zip(&[("first.csv", b"good,data\n"), ("second.bin", &payload)]);
        // Damage the second entry's compressed data (past its local header).
        let second = bytes.windows(10).position(|w| w == b"second.bin").unwrap();
        for byte in &mut bytes[second + 40..second + 80] {
            *byte ^= 0x5a;
        }
        fs::write(&zip, &bytes).unwrap();
        let dest = temp.path().join("out");
        let error = run(&zip, &dest).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Corrupt { entry, .. } if entry == "second.bin"),
            "{error:?}"
        );
        assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));

        let not_zip = temp.path().join("not.zip");
        fs::write(&not_zip, b"<html>nope</html>").unwrap();
        assert!(matches!(run(&not_zip, &dest), Err(UnzipError::NotZip(_))));
    }
}
