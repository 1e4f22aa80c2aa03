//! SHA-256 while writing (so a variable is hashed in the same pass that writes
//! it) and over existing files (streamed in 1 MiB blocks).
//!
//! Invariant for files a checkpoint lists: only a regular file is read (never
//! through a symlink, never a FIFO or device, which could block or never end),
//! never more than the size the manifest records, and the caller's `cancel`
//! is asked between blocks so an interrupt stops a long hash.
//!
//! Two SHA-256 implementations give the same digests (tested): sha2, which
//! uses the CPU's SHA instructions, in the kernel (feature `kernel`), and
//! hmac-sha256, portable and without dependencies, in the notebook session,
//! where every dependency lengthens the user's first `:dep` build.

use std::io::{self, Read, Write};
use std::path::Path;

/// SHA-256 in progress.
pub struct Sha256 {
    #[cfg(feature = "kernel")]
    inner: sha2::Sha256,
    #[cfg(not(feature = "kernel"))]
    inner: hmac_sha256::Hash,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

// `new` and `update` are `#[inline]` so that they, and hmac-sha256's generic
// buffering under them, are compiled into the crate that hashes: in a notebook
// session this crate is built without optimisation (the kernel's profile
// override, `write_build_profile`), and `HashingWriter` feeds `update` a few
// bytes per value rmp-serde writes, so an unoptimised `update` made saving a
// `Vec<f32>` 1.5x slower and a `Vec<u8>` 1.6x. Inlined, they are compiled in
// the cell that saves, at the session's level, and hmac-sha256's compression
// (not generic) in its own, optimised crate.
impl Sha256 {
    #[inline]
    pub fn new() -> Self {
        #[cfg(feature = "kernel")]
        let inner = <sha2::Sha256 as sha2::Digest>::new();
        #[cfg(not(feature = "kernel"))]
        let inner = hmac_sha256::Hash::new();
        Sha256 { inner }
    }

    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(feature = "kernel")]
        sha2::Digest::update(&mut self.inner, bytes);
        #[cfg(not(feature = "kernel"))]
        self.inner.update(bytes);
    }

    /// The digest as 64 lowercase hex digits.
    pub fn finish_hex(self) -> String {
        #[cfg(feature = "kernel")]
        let digest = sha2::Digest::finalize(self.inner);
        #[cfg(not(feature = "kernel"))]
        let digest = self.inner.finalize();
        to_hex(&digest)
    }
}

/// Counts and hashes the bytes that pass through to `inner`.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    /// The first write error, as text (encoders such as rmp-serde replace it
    /// with their own, which would hide a full disk).
    error: Option<String>,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            error: None,
        }
    }

    /// The first I/O error a write or flush met.
    pub fn io_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn remember<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(error) = &result
            && self.error.is_none()
        {
            self.error = Some(error.to_string());
        }
        result
    }

    /// The inner writer, the byte count and the hex digest.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, self.hasher.finish_hex())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        let written = self.remember(result)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.remember(result)
    }
}

/// Size and SHA-256 of a file.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((bytes, hasher.finish_hex()))
}

/// Why a listed file could not be hashed.
#[derive(Debug, PartialEq, Eq)]
pub enum HashProblem {
    /// Not a regular file (a symlink, a directory, a device, a FIFO).
    NotRegular,
    /// A different size from the expected one.
    Size(u64),
    /// The caller's `cancel` answered true.
    Cancelled,
    Io(String),
}

impl std::fmt::Display for HashProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashProblem::NotRegular => write!(f, "not a regular file (a symlink or special file)"),
            HashProblem::Size(size) => write!(f, "{size} bytes"),
            HashProblem::Cancelled => write!(f, "interrupted"),
            HashProblem::Io(error) => write!(f, "{error}"),
        }
    }
}

/// Opens `path` only if it is a regular file reached without following a
/// symlink in its last component; never blocks on a FIFO.
#[cfg(feature = "kernel")]
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64), HashProblem> {
    use std::os::unix::fs::OpenOptionsExt;
    let before = std::fs::symlink_metadata(path).map_err(|e| HashProblem::Io(e.to_string()))?;
    if !before.file_type().is_file() {
        return Err(HashProblem::NotRegular);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => HashProblem::NotRegular,
            _ => HashProblem::Io(e.to_string()),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| HashProblem::Io(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(HashProblem::NotRegular);
    }
    Ok((file, meta.len()))
}

/// SHA-256 of a listed file: a regular file of exactly `expected` bytes, read
/// in blocks with `cancel` asked between them.
#[cfg(feature = "kernel")]
pub fn hash_listed(
    path: &Path,
    expected: u64,
    cancel: &dyn Fn() -> bool,
) -> Result<String, HashProblem> {
    let (file, size) = open_regular(path)?;
    if size != expected {
        return Err(HashProblem::Size(size));
    }
    let mut reader = file.take(expected);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        if cancel() {
            return Err(HashProblem::Cancelled);
        }
        let read = reader
            .read(&mut buffer)
            .map_err(|e| HashProblem::Io(e.to_string()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    if bytes != expected {
        return Err(HashProblem::Size(bytes));
    }
    Ok(hasher.finish_hex())
}

fn to_hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

// The tests use what only the kernel has (listing, verifying); every
// workspace test build turns `kernel` on.
#[cfg(all(test, feature = "kernel"))]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_and_the_sessions_hashers_agree() {
        // Lengths around the 64-byte block and its padding boundary, and
        // data fed in uneven pieces.
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            let mut kernel = Sha256::new();
            for piece in data[..len].chunks(37) {
                kernel.update(piece);
            }
            let mut session = hmac_sha256::Hash::new();
            session.update(&data[..len]);
            assert_eq!(
                kernel.finish_hex(),
                to_hex(&session.finalize()),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn writer_and_file_hash_agree_with_the_known_vector() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").unwrap();
        let (bytes, count, digest) = writer.finish();
        assert_eq!(bytes, b"abc");
        assert_eq!(count, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = std::env::temp_dir().join(format!("ferrolab-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(hash_file(&path).unwrap(), (3, digest.clone()));
        assert_eq!(hash_listed(&path, 3, &|| false), Ok(digest));
        assert_eq!(hash_listed(&path, 4, &|| false), Err(HashProblem::Size(3)));
        assert_eq!(hash_listed(&path, 3, &|| true), Err(HashProblem::Cancelled));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn symlinks_and_devices_are_never_read() {
        let dir = std::env::temp_dir().join(format!("ferrolab-hash-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("zero");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        // /dev/zero never ends: reading it would hang; it must be refused at once.
        assert_eq!(
            hash_listed(&link, 1 << 40, &|| false),
            Err(HashProblem::NotRegular)
        );
        assert_eq!(
            hash_listed(Path::new("/dev/zero"), 1 << 40, &|| false),
            Err(HashProblem::NotRegular)
        );
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert_eq!(
            hash_listed(&fifo, 10, &|| false),
            Err(HashProblem::NotRegular)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
