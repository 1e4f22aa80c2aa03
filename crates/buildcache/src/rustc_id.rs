//! The compiler's identity for the key: `rustc -vV` (version, commit, host,
//! LLVM), remembered per compiler path, size and modification time so the
//! compiler runs once per toolchain update, not once per crate.

use crate::digest;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `rustc -vV` of `compiler`, from the memo in `memo_dir` when the binary is
/// unchanged.
pub fn identity(compiler: &Path, memo_dir: &Path) -> std::io::Result<String> {
    let resolved = resolve(compiler)?;
    let meta = std::fs::metadata(&resolved)?;
    let stamp = format!(
        "{} {} {}.{}",
        resolved.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let memo = memo_dir.join(format!(
        "{}.txt",
        &digest::bytes(resolved.as_os_str().as_encoded_bytes())[..24]
    ));
    if let Ok(text) = std::fs::read_to_string(&memo)
        && let Some((first, rest)) = text.split_once('\n')
        && first == stamp
        && !rest.is_empty()
    {
        return Ok(rest.to_owned());
    }
    let output = Command::new(&resolved).arg("-vV").output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "{} -vV failed",
            resolved.display()
        )));
    }
    let version = String::from_utf8(output.stdout)
        .map_err(|_| std::io::Error::other("rustc -vV wrote non-UTF-8"))?;
    if version.trim().is_empty() {
        return Err(std::io::Error::other("rustc -vV printed nothing"));
    }
    let staged = memo.with_extension(format!("new{}", std::process::id()));
    if std::fs::write(&staged, format!("{stamp}\n{version}")).is_ok() {
        let _ = std::fs::rename(&staged, &memo);
    }
    Ok(version)
}

fn resolve(compiler: &Path) -> std::io::Result<PathBuf> {
    if compiler.components().count() > 1 {
        return Ok(compiler.to_path_buf());
    }
    which::which(compiler).map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_notices_a_new_compiler() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("rustc");
        let count = dir.path().join("count");
        let write_fake = |version: &str| {
            std::fs::write(
                &fake,
                format!(
                    "#!/bin/sh\necho run >> {}\necho 'rustc {version}'\n",
                    count.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write_fake("1.0.0");
        let memo = dir.path().join("memo");
        std::fs::create_dir(&memo).unwrap();
        assert_eq!(identity(&fake, &memo).unwrap(), "rustc 1.0.0\n");
        assert_eq!(identity(&fake, &memo).unwrap(), "rustc 1.0.0\n");
        let runs = || std::fs::read_to_string(&count).unwrap().lines().count();
        assert_eq!(runs(), 1, "the second call used the memo");
        // A toolchain update replaces the binary (here: a new size).
        write_fake("1.10.0");
        assert_eq!(identity(&fake, &memo).unwrap(), "rustc 1.10.0\n");
        assert_eq!(runs(), 2);
    }
}
