//! SHA-256 of files and bytes, as lowercase hex.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub fn bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Streams the file through the hash.
pub fn file(path: &Path) -> std::io::Result<String> {
    reader(std::fs::File::open(path)?)
}

pub fn reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The hash of `data` with every occurrence of `from` replaced by `to`.
pub fn replaced(data: &[u8], from: &[u8], to: &[u8]) -> String {
    let mut hasher = Sha256::new();
    let mut rest = data;
    if !from.is_empty() {
        let finder = memchr::memmem::Finder::new(from);
        while let Some(at) = finder.find(rest) {
            hasher.update(&rest[..at]);
            hasher.update(to);
            rest = &rest[at + from.len()..];
        }
    }
    hasher.update(rest);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_hashes_like_the_replaced_text() {
        let data = b"a /tmp/x/target/b /tmp/x/target";
        assert_eq!(
            replaced(data, b"/tmp/x/target", b"<T>"),
            bytes(b"a <T>/b <T>")
        );
        assert_eq!(replaced(data, b"", b"<T>"), bytes(data));
        assert_eq!(
            bytes(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
