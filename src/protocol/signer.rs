//! HMAC-SHA256 message signatures and the duplicate-signature guard.
//!
//! An empty key disables signing: the signature frame is empty and nothing is
//! checked. Verification is constant time (`Mac::verify_slice`). Buffers are not
//! part of the signature, as in jupyter_client.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Why a message's signature was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is missing")]
    Missing,
    #[error("signature is not lowercase hex of the right length")]
    Malformed,
    #[error("signature does not match the message (wrong key or tampered content)")]
    Mismatch,
    #[error("signature was already used by an earlier message (replay)")]
    Duplicate,
}

/// Signs and verifies with the connection key.
#[derive(Clone)]
pub struct Signer {
    mac: Option<HmacSha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.mac.is_some() {
            "Signer(hmac-sha256)"
        } else {
            "Signer(unsigned)"
        })
    }
}

impl Signer {
    pub fn new(key: &str) -> Self {
        let mac = if key.is_empty() {
            None
        } else {
            // HMAC accepts keys of any length; new_from_slice cannot fail for it.
            HmacSha256::new_from_slice(key.as_bytes()).ok()
        };
        Signer { mac }
    }

    /// True when the key is empty and messages are not signed.
    pub fn is_unsigned(&self) -> bool {
        self.mac.is_none()
    }

    /// Lowercase hex HMAC of the parts, or an empty string when unsigned.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        match &self.mac {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// Checks `signature` (hex, as received) against the parts in constant time.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]]) -> Result<(), SignatureError> {
        let Some(mac) = &self.mac else {
            return Ok(());
        };
        if signature.is_empty() {
            return Err(SignatureError::Missing);
        }
        // Lowercase hex only, as every Jupyter client sends it: an uppercase
        // spelling of the same MAC would otherwise pass the check while
        // looking new to the replay guard (found by tests/wire_fuzz.rs).
        if signature.len() != 64
            || !signature
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return Err(SignatureError::Malformed);
        }
        let tag = hex::decode(signature).map_err(|_| SignatureError::Malformed)?;
        let mut mac = mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    }
}

/// Remembers recent signatures so that a replayed message is refused.
///
/// Bounded: the oldest signatures are forgotten after `capacity` newer ones, the
/// same policy as jupyter_client's digest history.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(1 << 16)
    }
}

impl ReplayGuard {
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records a signature; fails if it was seen before. Empty signatures
    /// (unsigned sessions) are never recorded.
    pub fn check_and_record(&mut self, signature: &[u8]) -> Result<(), SignatureError> {
        if signature.is_empty() {
            return Ok(());
        }
        if self.seen.contains(signature) {
            return Err(SignatureError::Duplicate);
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(signature.to_vec());
        self.order.push_back(signature.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTS: [&[u8]; 4] = [b"{\"msg_id\":\"1\"}", b"{}", b"{}", b"{\"code\":\"1\"}"];

    #[test]
    fn sign_then_verify_round_trips() {
        let signer = Signer::new("secret");
        let signature = signer.sign(&PARTS);
        assert_eq!(signature.len(), 64);
        assert!(signature.chars().all(|c| c.is_ascii_hexdigit()));
        signer.verify(signature.as_bytes(), &PARTS).unwrap();
    }

    #[test]
    fn known_vector_matches_python_hmac() {
        // python3 -c "import hmac,hashlib;h=hmac.new(b'key',digestmod=hashlib.sha256);
        //   [h.update(p) for p in [b'a',b'b',b'c',b'd']];print(h.hexdigest())"
        let signer = Signer::new("key");
        assert_eq!(
            signer.sign(&[b"a", b"b", b"c", b"d"]),
            "2a31ec0ee8d878c9eece9fb0df79b3b90b2256240163aa5ee50d176d3d1121f8"
        );
    }

    #[test]
    fn wrong_key_is_a_mismatch() {
        let signature = Signer::new("secret").sign(&PARTS);
        assert_eq!(
            Signer::new("other").verify(signature.as_bytes(), &PARTS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_content_is_a_mismatch() {
        let signer = Signer::new("secret");
        let signature = signer.sign(&PARTS);
        let mut tampered = PARTS;
        tampered[3] = b"{\"code\":\"2\"}";
        assert_eq!(
            signer.verify(signature.as_bytes(), &tampered),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_signatures_are_refused() {
        let signer = Signer::new("secret");
        assert_eq!(signer.verify(b"", &PARTS), Err(SignatureError::Missing));
        assert_eq!(
            signer.verify(b"abc", &PARTS),
            Err(SignatureError::Malformed)
        );
        let not_hex = "z".repeat(64);
        assert_eq!(
            signer.verify(not_hex.as_bytes(), &PARTS),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn an_uppercase_spelling_of_a_valid_signature_is_refused() {
        let signer = Signer::new("key");
        let parts: [&[u8]; 2] = [b"header", b"content"];
        let signature = signer.sign(&parts);
        assert!(signer.verify(signature.as_bytes(), &parts).is_ok());
        let upper = signature.to_uppercase();
        assert_ne!(upper, signature, "the signature has hex letters");
        assert!(matches!(
            signer.verify(upper.as_bytes(), &parts),
            Err(SignatureError::Malformed)
        ));
    }

    #[test]
    fn empty_key_means_unsigned() {
        let signer = Signer::new("");
        assert!(signer.is_unsigned());
        assert_eq!(signer.sign(&PARTS), "");
        signer.verify(b"", &PARTS).unwrap();
        signer.verify(b"anything", &PARTS).unwrap();
    }

    #[test]
    fn replay_guard_refuses_duplicates_and_forgets_old_ones() {
        let mut guard = ReplayGuard::with_capacity(2);
        guard.check_and_record(b"a").unwrap();
        assert_eq!(guard.check_and_record(b"a"), Err(SignatureError::Duplicate));
        guard.check_and_record(b"b").unwrap();
        guard.check_and_record(b"c").unwrap();
        // "a" fell out of the window of 2.
        guard.check_and_record(b"a").unwrap();
        guard.check_and_record(b"").unwrap();
        guard.check_and_record(b"").unwrap();
    }

    #[test]
    fn debug_does_not_show_key() {
        assert_eq!(
            format!("{:?}", Signer::new("hunter2")),
            "Signer(hmac-sha256)"
        );
    }
}
