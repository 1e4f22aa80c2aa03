//! Seals the connection info for the gateway and sends it (payload version 1).
//!
//! The JSON is padded (PKCS#7) and encrypted with AES-128-ECB under a key
//! drawn for this one message; that key is encrypted for the gateway with
//! RSA PKCS#1 v1.5. The message is base64 of
//! `{"version": 1, "key": b64(rsa(aes_key)), "conn_info": b64(aes(json))}`,
//! written to the response address, then the connection is closed (the
//! gateway reads to end of stream). This is the format Enterprise Gateway
//! 3.x decrypts; ECB is its choice, not ours, and the payload is sent once.

use crate::settings::ResponseAddress;
use aes::cipher::{BlockEncryptMut, KeyInit, block_padding::Pkcs7};
use base64::Engine as _;
use rand::RngCore as _;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use std::io::Write as _;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// The launcher payload version this crate writes.
pub const LAUNCHER_VERSION: u32 = 1;

/// How long connecting to and writing to the gateway may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The base64 message the gateway expects for `connection_info` (a JSON
/// object's bytes).
pub fn seal(connection_info: &[u8], gateway_key: &RsaPublicKey) -> Result<String, rsa::Error> {
    let mut aes_key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut aes_key);
    let sealed_info = ecb::Encryptor::<aes::Aes128>::new(&aes_key.into())
        .encrypt_padded_vec_mut::<Pkcs7>(connection_info);
    let sealed_key = gateway_key.encrypt(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, &aes_key)?;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let payload = serde_json::json!({
        "version": LAUNCHER_VERSION,
        "key": b64.encode(sealed_key),
        "conn_info": b64.encode(sealed_info),
    });
    Ok(b64.encode(payload.to_string()))
}

/// Writes `message` to the gateway's response address and closes the stream.
pub fn send(address: &ResponseAddress, message: &str) -> std::io::Result<()> {
    let addresses = address
        .resolve()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let mut last_error = None;
    for socket_address in addresses {
        match TcpStream::connect_timeout(&socket_address, SEND_TIMEOUT) {
            Ok(mut stream) => {
                stream.set_write_timeout(Some(SEND_TIMEOUT))?;
                stream.write_all(message.as_bytes())?;
                stream.flush()?;
                let _ = stream.shutdown(Shutdown::Write);
                return Ok(());
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_key::test_key;
    use aes::cipher::BlockDecryptMut;
    use std::io::Read as _;

    /// What the gateway does with a version-1 payload.
    fn open(message: &str, private: &rsa::RsaPrivateKey) -> Vec<u8> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let payload: serde_json::Value =
            serde_json::from_slice(&b64.decode(message).unwrap()).unwrap();
        assert_eq!(payload["version"], 1);
        let key = private
            .decrypt(
                Pkcs1v15Encrypt,
                &b64.decode(payload["key"].as_str().unwrap()).unwrap(),
            )
            .unwrap();
        assert_eq!(key.len(), 16);
        let key: [u8; 16] = key.try_into().unwrap();
        ecb::Decryptor::<aes::Aes128>::new(&key.into())
            .decrypt_padded_vec_mut::<Pkcs7>(
                &b64.decode(payload["conn_info"].as_str().unwrap()).unwrap(),
            )
            .unwrap()
    }

    #[test]
    fn the_gateway_can_open_what_is_sealed_and_nobody_reads_it_in_between() {
        let (private, public_text) = test_key();
        let public = crate::settings::parse_public_key(&public_text).unwrap();
        let info = br#"{"shell_port": 40001, "key": "signing-key-42"}"#;
        let message = seal(info, &public).unwrap();
        assert_eq!(open(&message, &private), info);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&message)
            .unwrap();
        assert!(!String::from_utf8_lossy(&decoded).contains("signing-key-42"));
        assert_ne!(
            seal(info, &public).unwrap(),
            message,
            "a fresh AES key per message"
        );
    }

    #[test]
    fn send_writes_the_whole_message_then_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut received = String::new();
            stream.read_to_string(&mut received).unwrap();
            received
        });
        let message = "x".repeat(100_000);
        send(
            &ResponseAddress {
                host: "127.0.0.1".into(),
                port,
            },
            &message,
        )
        .unwrap();
        assert_eq!(reader.join().unwrap(), message);
    }
}
