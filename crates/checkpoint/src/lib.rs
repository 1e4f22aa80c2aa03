//! ferrolab's checkpoint format, shared by the kernel and the notebook session.
//!
//! A checkpoint is a directory `ckpt-NNNNNN` under the checkpoint root:
//! `vars/<name>.msgpack` (one MessagePack file per saved variable), `session/`
//! (dependencies, item source, the journal of cells), `files/` (copies of the
//! user's files) and `MANIFEST.json`, which lists every file with its size and
//! SHA-256.
//!
//! Invariants:
//! - a checkpoint is valid only if its manifest parses and every listed file
//!   has the recorded size and hash; nothing else is trusted;
//! - the manifest is written last, into a temporary directory whose files are
//!   already fsynced; the directory is renamed into place and its parent fsynced
//!   ([`commit`]). A crash at any step leaves earlier checkpoints untouched and at
//!   most a `.tmp-*` directory that [`commit::sweep`] removes later;
//! - variables are written streaming (no whole-file buffer) and only borrowed.

pub mod commit;
pub mod crash;
pub mod hash;
pub mod in_cell;
pub mod manifest;
pub mod vars;

pub use manifest::{FileEntry, Manifest, Status, UserFile, Variable};
pub use vars::{Probe, VarWriter, ViaNothing, ViaSerde, load, load_slot};
