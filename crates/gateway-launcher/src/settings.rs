//! What the gateway tells a launcher, checked before anything is bound or sent.
//!
//! Enterprise Gateway passes `--response-address`, `--public-key`,
//! `--kernel-id` and `--port-range` (kernel.json argv) or the variables
//! `RESPONSE_ADDRESS`, `PUBLIC_KEY`, `KERNEL_ID`, `PORT_RANGE` (a kernel pod).
//! Each missing or malformed value is refused with a message that names it,
//! says what the gateway would have sent, and never echoes the key.

use crate::ports::PortRange;
use base64::Engine as _;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use std::net::{SocketAddr, ToSocketAddrs};

/// Why a launcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "no response address: Enterprise Gateway passes it as `--response-address {{response_address}}` in kernel.json (or RESPONSE_ADDRESS in a kernel pod); without it the gateway can never learn this kernel's ports, so nothing was started"
    )]
    MissingResponseAddress,
    #[error(
        "the response address {0:?} is not HOST:PORT with a port from 1 to 65535 (Enterprise Gateway sends e.g. 10.0.0.5:8877); nothing was started"
    )]
    BadResponseAddress(String),
    #[error(
        "the response address {address} does not resolve to an IP address ({reason}); nothing was started"
    )]
    UnresolvableResponseAddress { address: String, reason: String },
    #[error(
        "no public key: Enterprise Gateway passes it as `--public-key {{public_key}}` (or PUBLIC_KEY in a kernel pod); the connection info is never sent unencrypted, so nothing was started"
    )]
    MissingPublicKey,
    #[error(
        "the public key is not a base64 DER RSA public key as Enterprise Gateway sends ({0}); nothing was started"
    )]
    BadPublicKey(String),
    #[error("no kernel id: Enterprise Gateway passes it as `--kernel-id {{kernel_id}}`")]
    MissingKernelId,
    #[error("{0}")]
    BadPortRange(String),
    #[error(
        "only `none` is supported for --spark-context-initialization-mode (got {0:?}): ferrolab has no Spark context to create"
    )]
    UnsupportedSparkMode(String),
}

/// `HOST:PORT` of the gateway's response listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseAddress {
    pub host: String,
    pub port: u16,
}

impl ResponseAddress {
    /// Parses `HOST:PORT` or `[IPv6]:PORT`.
    pub fn parse(text: &str) -> Result<Self, LaunchError> {
        let bad = || LaunchError::BadResponseAddress(text.to_owned());
        let text = text.trim();
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty()
            || host.contains(char::is_whitespace)
            || host.contains(':') && !text.starts_with('[')
        {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The socket addresses the host resolves to (at least one).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, LaunchError> {
        let unresolvable = |reason: String| LaunchError::UnresolvableResponseAddress {
            address: format!("{}:{}", self.host, self.port),
            reason,
        };
        let addresses: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| unresolvable(error.to_string()))?
            .collect();
        if addresses.is_empty() {
            return Err(unresolvable("no address".to_owned()));
        }
        Ok(addresses)
    }
}

/// Everything a launcher needs from the gateway, validated.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    pub kernel_id: String,
    pub response: ResponseAddress,
    /// Where the response address resolved; the communication port obeys
    /// these hosts (and loopback) only.
    pub gateway_addresses: Vec<SocketAddr>,
    pub public_key: RsaPublicKey,
    pub ports: Option<PortRange>,
}

impl LaunchSettings {
    /// Checks every value; `None` or an empty string counts as missing.
    pub fn new(
        kernel_id: Option<&str>,
        response_address: Option<&str>,
        public_key: Option<&str>,
        port_range: Option<&str>,
        spark_mode: Option<&str>,
    ) -> Result<Self, LaunchError> {
        let response = ResponseAddress::parse(
            present(response_address).ok_or(LaunchError::MissingResponseAddress)?,
        )?;
        let public_key =
            parse_public_key(present(public_key).ok_or(LaunchError::MissingPublicKey)?)?;
        let kernel_id = present(kernel_id).ok_or(LaunchError::MissingKernelId)?;
        if let Some(mode) = present(spark_mode)
            && mode != "none"
        {
            return Err(LaunchError::UnsupportedSparkMode(mode.to_owned()));
        }
        let ports = match present(port_range) {
            None => None,
            Some(text) => PortRange::parse(text).map_err(LaunchError::BadPortRange)?,
        };
        let gateway_addresses = response.resolve()?;
        Ok(Self {
            kernel_id: kernel_id.to_owned(),
            response,
            gateway_addresses,
            public_key,
            ports,
        })
    }
}

/// `None` for a missing or blank value.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|text| !text.is_empty())
}

/// The gateway's key: base64 of a DER SubjectPublicKeyInfo (what
/// pycryptodome's `publickey().exportKey(format="DER")` writes).
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, LaunchError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|error| LaunchError::BadPublicKey(format!("not base64: {error}")))?;
    RsaPublicKey::from_public_key_der(&der)
        .map_err(|error| LaunchError::BadPublicKey(format!("not an RSA key: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_key::test_key;

    #[test]
    fn response_addresses_parse_or_say_why() {
        assert_eq!(
            ResponseAddress::parse("10.0.0.5:8877").unwrap(),
            ResponseAddress {
                host: "10.0.0.5".into(),
                port: 8877
            }
        );
        assert_eq!(ResponseAddress::parse("[::1]:9").unwrap().host, "::1");
        assert_eq!(ResponseAddress::parse("gateway.local:1").unwrap().port, 1);
        for bad in [
            "10.0.0.5",
            "10.0.0.5:",
            ":80",
            "10.0.0.5:0",
            "10.0.0.5:70000",
            "host:x",
            "::1:80",
            "a b:1",
        ] {
            let error = ResponseAddress::parse(bad).unwrap_err().to_string();
            assert!(error.contains("HOST:PORT"), "{bad}: {error}");
        }
    }

    #[test]
    fn settings_refuse_what_is_missing_before_anything_else() {
        let (_, key) = test_key();
        let error = LaunchSettings::new(Some("k"), None, Some(&key), None, None).unwrap_err();
        assert!(matches!(error, LaunchError::MissingResponseAddress));
        assert!(error.to_string().contains("--response-address"));
        let error = LaunchSettings::new(Some("k"), Some("  "), Some(&key), None, None).unwrap_err();
        assert!(matches!(error, LaunchError::MissingResponseAddress));
        let error =
            LaunchSettings::new(Some("k"), Some("127.0.0.1:9"), None, None, None).unwrap_err();
        assert!(matches!(error, LaunchError::MissingPublicKey));
        let error = LaunchSettings::new(
            Some("k"),
            Some("127.0.0.1:9"),
            Some("bm90IGEga2V5"),
            None,
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("not an RSA key"), "{error}");
        let error =
            LaunchSettings::new(None, Some("127.0.0.1:9"), Some(&key), None, None).unwrap_err();
        assert!(matches!(error, LaunchError::MissingKernelId));
        let error = LaunchSettings::new(
            Some("k"),
            Some("127.0.0.1:9"),
            Some(&key),
            None,
            Some("eager"),
        )
        .unwrap_err();
        assert!(matches!(error, LaunchError::UnsupportedSparkMode(_)));
        let settings = LaunchSettings::new(
            Some("k"),
            Some("127.0.0.1:9"),
            Some(&key),
            Some("0..0"),
            Some("none"),
        )
        .unwrap();
        assert_eq!(settings.ports, None);
        assert_eq!(
            settings.gateway_addresses,
            vec!["127.0.0.1:9".parse().unwrap()]
        );
    }

    #[test]
    fn a_bad_key_is_never_echoed() {
        let secretish = "c2VjcmV0LWtleS1tYXRlcmlhbA==";
        let error = parse_public_key(secretish).unwrap_err().to_string();
        assert!(!error.contains(secretish), "{error}");
    }
}
