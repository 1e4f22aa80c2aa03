//! The kernel-launcher side of Jupyter Enterprise Gateway's remote kernels.
//!
//! Enterprise Gateway starts a remote kernel (on an SSH host, in a pod) with
//! three facts: a *response address* (`ip:port` on the gateway), its RSA
//! *public key* (base64 DER) and an optional *port range*. The launcher binds
//! the kernel's ports first, then sends the connection info back sealed
//! ([`seal`]: AES-128-ECB under a fresh key, that key RSA-PKCS#1-v1.5
//! encrypted for the gateway, launcher payload version 1), and afterwards
//! obeys the gateway's requests on a *communication port* ([`comm`]):
//! `{"signum": n}` and `{"shutdown": 1}`.
//!
//! Invariants: nothing is sent unless the response address and the key are
//! valid ([`LaunchSettings::new`] says why not); the connection info (which
//! holds the kernel's signing key) leaves this process only sealed; the
//! communication port obeys only the gateway's host or loopback, only the
//! signals the protocol uses (0, 2, 9, 15), and reads at most
//! [`comm::MAX_REQUEST_BYTES`] per request.

pub mod comm;
pub mod ports;
pub mod seal;
pub mod settings;

pub use comm::{CommEvent, Request};
pub use ports::PortRange;
pub use seal::seal;
pub use settings::{LaunchError, LaunchSettings, ResponseAddress};

#[cfg(test)]
mod test_key {
    use base64::Engine as _;
    use rsa::pkcs8::EncodePublicKey;

    /// A throwaway gateway key pair: the private half and the public half as
    /// the gateway passes it (base64 DER).
    pub fn test_key() -> (rsa::RsaPrivateKey, String) {
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let der = private.to_public_key().to_public_key_der().unwrap();
        let text = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        (private, text)
    }
}
