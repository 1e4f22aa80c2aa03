//! ferrolab's build cache: compiled crates shared by every notebook kernel
//! of a user, across restarts and (when the directory is on a mounted disk)
//! machines.
//!
//! The kernel tells cargo to run the ferrolab binary as its `RUSTC_WRAPPER`
//! ([`Settings::cargo_env`]); the binary then calls [`wrapper::main`], which
//! restores a crate's artifacts from the cache or compiles it and stores the
//! result. Only what is safe to share is cached: crates cargo builds without
//! incremental compilation (registry and git crates) and local crates the
//! embedder names whose directory changes whenever their sources do.
//!
//! Modules, each with one job: [`settings`] (where, how big, on/off, from the
//! environment), [`invocation`] (reading a rustc command line), [`key`] (what
//! an output depends on), [`rustc_id`] (the compiler's identity),
//! [`store`] (the directory: atomic entries, verified restores, LRU
//! eviction), [`events`] (hit/miss statistics), [`wrapper`] (the flow).
//! This crate knows nothing about Jupyter or evcxr.

pub mod digest;
pub mod events;
pub mod invocation;
pub mod key;
pub mod ready;
pub mod rustc_id;
pub mod settings;
pub mod store;
pub mod wrapper;

pub use invocation::AllowedLocal;
pub use ready::BuildLock;
pub use settings::{DEFAULT_MB, DIR_ENV, MB_ENV, Settings, WRAPPER_ENV, cargo_env_for_this_binary};
pub use store::{Cache, CacheError, EntryInfo, PruneReport, Stats};
pub use wrapper::{WrapperConfig, session_tag};
