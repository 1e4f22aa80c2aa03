//! Bytes ⇄ typed Jupyter messages.
//!
//! This layer is pure: it parses connection files, splits and joins the multipart
//! frames of the wire format, signs and verifies them, and (de)serialises message
//! contents. It performs no socket I/O and holds no session state beyond the
//! replay guard that callers own.
//!
//! Invariants:
//! - signatures are always checked over the raw bytes that arrived, never over
//!   re-serialised JSON;
//! - the connection key never appears in `Debug` output or error messages.

pub mod connection;
pub mod content;
pub mod message;
pub mod signer;
pub mod wire;

pub use connection::{ConnectionError, ConnectionInfo, Transport};
pub use message::{Header, Message, PROTOCOL_VERSION};
pub use signer::{ReplayGuard, SignatureError, Signer};
pub use wire::{Codec, DecodeError, RawMessage};
