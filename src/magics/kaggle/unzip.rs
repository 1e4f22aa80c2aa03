//! `--unzip`: extracts a downloaded archive, all or nothing.
//!
//! Every entry name is checked before anything is written: one that would
//! land outside the target (`../x`, `/etc/x`) or a symbolic link is refused,
//! naming it. Entries are extracted into a hidden staging directory inside the
//! target (several threads, one archive reader each), each checked against its
//! CRC-32 and size, and moved into place only when all of them are good. On any
//! failure the staging directory is removed, so nothing half-extracted is
//! left, and the zip is kept; the caller deletes the zip only after success.

use super::client::Cancel;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub enum UnzipError {
    NotZip(String),
    Unsafe(String),
    Corrupt { entry: String, reason: String },
    Io(String),
    Interrupted,
}

impl UnzipError {
    /// The message, naming the archive and what was left.
    pub fn describe(&self, zip: &Path, dest: &Path) -> String {
        let zip_name = zip.display();
        match self {
            UnzipError::NotZip(reason) => format!(
                "{zip_name} is not a valid zip file ({reason}). It is kept; download it again with --force."
            ),
            UnzipError::Unsafe(entry) => format!(
                "Refused to extract {zip_name}: entry `{entry}` would be written outside {} (zip-slip) or is a link. Nothing was extracted; the zip is kept.",
                dest.display()
            ),
            UnzipError::Corrupt { entry, reason } => format!(
                "{zip_name} is corrupt: entry `{entry}`: {reason}. Nothing was extracted; the zip is kept — download it again with --force."
            ),
            UnzipError::Io(reason) => format!(
                "Could not extract {zip_name}: {reason}. Nothing was extracted; the zip is kept."
            ),
            UnzipError::Interrupted => format!(
                "Interrupted while extracting {zip_name}: nothing was extracted; the zip is kept."
            ),
        }
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub bytes: u64,
}

struct Entry {
    index: usize,
    name: String,
    path: PathBuf,
    is_dir: bool,
}

fn open(zip: &Path) -> Result<zip::ZipArchive<File>, UnzipError> {
    let file = File::open(zip).map_err(|error| UnzipError::Io(error.to_string()))?;
    zip::ZipArchive::new(file).map_err(|error| UnzipError::NotZip(error.to_string()))
}

/// Checks every name first: nothing is written if one is unsafe.
fn plan(archive: &mut zip::ZipArchive<File>) -> Result<Vec<Entry>, UnzipError> {
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let file = archive
            .by_index_raw(index)
            .map_err(|error| UnzipError::NotZip(error.to_string()))?;
        let name = file
            .name()
            .map(|name| name.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(file.name_raw()).into_owned());
        let Some(path) = file.enclosed_name() else {
            return Err(UnzipError::Unsafe(name));
        };
        if file.is_symlink() {
            return Err(UnzipError::Unsafe(name));
        }
        if path.as_os_str().is_empty() {
            continue;
        }
        entries.push(Entry {
            index,
            name,
            path,
            is_dir: file.is_dir(),
        });
    }
    Ok(entries)
}

/// Copies one entry to `target`, checking its CRC-32 and size.
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
    let expected_size = file.size();
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
        hasher.update(&buffer[..count]);
        out.write_all(&buffer[..count])
            .map_err(|error| UnzipError::Io(format!("{}: {error}", target.display())))?;
        written += count as u64;
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

/// Moves everything from `from` into `to`, merging directories.
fn move_into(from: &Path, to: &Path) -> io::Result<()> {
    for item in fs::read_dir(from)? {
        let item = item?;
        let source = item.path();
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() && target.is_dir() {
            move_into(&source, &target)?;
        } else {
            if target.is_dir() {
                fs::remove_dir_all(&target)?;
            }
            fs::rename(&source, &target)?;
        }
    }
    Ok(())
}

/// Extracts `zip` into `dest`, all or nothing.
pub fn extract(zip: &Path, dest: &Path, cancel: &Cancel) -> Result<Extracted, UnzipError> {
    let mut archive = open(zip)?;
    let entries = plan(&mut archive)?;
    fs::create_dir_all(dest).map_err(|error| UnzipError::Io(error.to_string()))?;
    let stem = zip
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = dest.join(format!(".{stem}.unzipping-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(|error| UnzipError::Io(error.to_string()))?;
    let result = extract_all(zip, archive, &entries, &staging, cancel).and_then(|extracted| {
        move_into(&staging, dest)
            .map(|()| extracted)
            .map_err(|error| UnzipError::Io(error.to_string()))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// A zip of `(name, bytes)` entries, deflated.
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
            if path.is_dir() {
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
        let extracted = extract(&zip, &dest, &Cancel::never()).unwrap();
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
        let error = extract(&zip, &dest, &Cancel::never()).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Unsafe(name) if name == "../evil.txt"),
            "{error:?}"
        );
        assert!(error.describe(&zip, &dest).contains("`../evil.txt`"));
        assert!(!temp.path().join("evil.txt").exists());
        assert!(!dest.join("fine.txt").exists());
        assert!(zip.exists());
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
        let error = extract(&zip, &dest, &Cancel::never()).unwrap_err();
        assert!(
            matches!(&error, UnzipError::Corrupt { entry, .. } if entry == "second.bin"),
            "{error:?}"
        );
        assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));

        let not_zip = temp.path().join("not.zip");
        fs::write(&not_zip, b"<html>nope</html>").unwrap();
        assert!(matches!(
            extract(&not_zip, &dest, &Cancel::never()),
            Err(UnzipError::NotZip(_))
        ));
    }
}
