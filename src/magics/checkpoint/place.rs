//! Where checkpoints live: a local folder, or S3-compatible object storage
//! (`s3://bucket/prefix`). Every command goes through [`Place`], so listing,
//! verifying, restoring, removing and retention behave the same on both.
//!
//! Invariants: a save is always staged and committed in a local folder first
//! (the destination itself, or a private spool for object storage) and only
//! then published; restore reads from a local folder whose files were checked
//! against the manifest (object storage is downloaded and verified first).

use super::remote::{self, Remote};
use super::state::Env;
use crate::kernel::CellContext;
use ferrolab_checkpoint::commit::{self, Listed};
use ferrolab_checkpoint::manifest::Depth;
use std::path::{Path, PathBuf};

pub enum Place {
    Local(PathBuf),
    Remote(Remote),
}

/// A checkpoint ready to be read: a local folder with checked files, and
/// whether it is the user's own (`Err` says why not).
pub struct Opened {
    pub dir: PathBuf,
    pub origin: Result<(), String>,
}

impl Place {
    /// `s3://…` or a folder (made absolute against the current directory).
    pub fn parse(text: &str, env: &Env) -> Result<Place, String> {
        if remote::is_url(text) {
            return Remote::from_url(text, env).map(Place::Remote);
        }
        let path = PathBuf::from(text);
        Ok(Place::Local(if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&path))
                .unwrap_or(path)
        }))
    }

    /// As shown to the user.
    pub fn describe(&self) -> String {
        match self {
            Place::Local(dir) => dir.display().to_string(),
            Place::Remote(remote) => remote.url(),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Place::Remote(_))
    }

    /// The local folder a save is staged and committed in.
    pub fn staging_root(&self) -> Result<PathBuf, String> {
        match self {
            Place::Local(dir) => Ok(dir.clone()),
            Place::Remote(remote) => remote.spool(),
        }
    }

    /// Every checkpoint, oldest first. Object storage is checked by sizes
    /// (hashes are checked when a checkpoint is downloaded).
    pub fn list(&self, depth: Depth, cancel: &dyn Fn() -> bool) -> Result<Vec<Listed>, String> {
        match self {
            Place::Local(dir) => commit::list_with(dir, depth, cancel)
                .map_err(|e| format!("cannot read {}: {e}", dir.display())),
            Place::Remote(remote) => remote.list(cancel),
        }
    }

    /// Makes `entry` readable locally, every file checked against the manifest.
    pub fn open(&self, entry: &Listed, cell: &CellContext) -> Result<Opened, String> {
        let manifest = entry.manifest.as_ref().map_err(String::clone)?;
        match self {
            Place::Local(_) => Ok(Opened {
                dir: entry.path.clone(),
                origin: super::trust::local_origin(&entry.path, manifest),
            }),
            Place::Remote(remote) => remote.download(entry, cell),
        }
    }

    /// Deletes one checkpoint (the manifest first on object storage, so a
    /// half-deleted checkpoint is never taken for a valid one).
    pub fn remove(&self, entry: &Listed) -> Result<(), String> {
        match self {
            Place::Local(_) => commit::remove(&entry.path)
                .map_err(|e| format!("cannot remove {}: {e}", entry.name)),
            Place::Remote(remote) => remote.remove(&entry.name),
        }
    }

    /// After a local commit in [`staging_root`](Self::staging_root): for
    /// object storage, uploads it (data first, the manifest last) and returns
    /// the name it has there. Local commits are already final.
    pub fn publish(&self, committed: &Path, cell: Option<&CellContext>) -> Result<String, String> {
        let name = committed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self {
            Place::Local(_) => Ok(name),
            Place::Remote(remote) => remote.upload(committed, cell),
        }
    }
}
