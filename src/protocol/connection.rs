//! The connection file a Jupyter client writes for each kernel it starts.
//!
//! Unknown fields are ignored (clients add `kernel_name` and others). The key is a
//! secret: `Debug` redacts it and no error message ever includes it.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// How the five sockets are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Ipc,
}

/// Parsed contents of a connection file.
#[derive(Clone, Deserialize)]
pub struct ConnectionInfo {
    #[serde(default = "default_transport")]
    pub transport: Transport,
    pub ip: String,
    pub shell_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub control_port: u16,
    pub hb_port: u16,
    #[serde(default)]
    pub key: String,
    #[serde(default = "default_scheme")]
    pub signature_scheme: String,
}

fn default_transport() -> Transport {
    Transport::Tcp
}

fn default_scheme() -> String {
    "hmac-sha256".to_owned()
}

/// Why a connection file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot read connection file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "connection file {path} is not valid: {message} (it must be the JSON file a Jupyter client writes, with ip, transport, key and the five ports)"
    )]
    Invalid { path: PathBuf, message: String },
    #[error(
        "connection file asks for signature scheme {0:?}; ferrolab supports only \"hmac-sha256\""
    )]
    UnsupportedScheme(String),
}

impl ConnectionInfo {
    /// Reads and validates a connection file.
    pub fn from_file(path: &Path) -> Result<Self, ConnectionError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConnectionError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text).map_err(|error| match error {
            ConnectionError::Invalid { message, .. } => ConnectionError::Invalid {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses connection-file JSON. Serde's messages never quote field values, so
    /// the key cannot leak through them.
    pub fn from_json(text: &str) -> Result<Self, ConnectionError> {
        let info: ConnectionInfo =
            serde_json::from_str(text).map_err(|error| ConnectionError::Invalid {
                path: PathBuf::new(),
                message: redact_serde_error(&error),
            })?;
        if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
            return Err(ConnectionError::UnsupportedScheme(
                info.signature_scheme.clone(),
            ));
        }
        Ok(info)
    }

    /// The ZeroMQ endpoint for one port: `tcp://ip:port` or `ipc://path-port`.
    pub fn endpoint(&self, port: u16) -> String {
        match self.transport {
            Transport::Tcp => {
                if self.ip.contains(':') && !self.ip.starts_with('[') {
                    format!("tcp://[{}]:{port}", self.ip)
                } else {
                    format!("tcp://{}:{port}", self.ip)
                }
            }
            Transport::Ipc => format!("ipc://{}-{port}", self.ip),
        }
    }
}

/// Serde reports the position and the kind of problem; we keep only that, so a
/// message can never echo an unexpected value (which might be the key).
fn redact_serde_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    // Messages such as `invalid type: string "secret", expected u16` quote values.
    match text.find('"') {
        Some(index) => format!(
            "{} (line {}, column {})",
            text[..index].trim_end(),
            error.line(),
            error.column()
        ),
        None => text,
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("transport", &self.transport)
            .field("ip", &self.ip)
            .field("shell_port", &self.shell_port)
            .field("iopub_port", &self.iopub_port)
            .field("stdin_port", &self.stdin_port)
            .field("control_port", &self.control_port)
            .field("hb_port", &self.hb_port)
            .field(
                "key",
                &if self.key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("signature_scheme", &self.signature_scheme)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = r#"{"control_port": 50160, "shell_port": 57503, "transport": "tcp",
        "signature_scheme": "hmac-sha256", "stdin_port": 52597, "hb_port": 42540,
        "ip": "127.0.0.1", "iopub_port": 40885, "key": "a0436f6c-1916-498b-8eb9-e81ab9368e84",
        "kernel_name": "ferrolab"}"#;

    #[test]
    fn parses_tcp_and_ignores_unknown_fields() {
        let info = ConnectionInfo::from_json(TCP).unwrap();
        assert_eq!(info.transport, Transport::Tcp);
        assert_eq!(info.endpoint(info.shell_port), "tcp://127.0.0.1:57503");
        assert_eq!(info.key, "a0436f6c-1916-498b-8eb9-e81ab9368e84");
    }

    #[test]
    fn parses_ipc_endpoints_with_dash() {
        let text = r#"{"transport": "ipc", "ip": "/tmp/kernel-abc", "shell_port": 1,
            "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": ""}"#;
        let info = ConnectionInfo::from_json(text).unwrap();
        assert_eq!(info.transport, Transport::Ipc);
        assert_eq!(info.endpoint(info.iopub_port), "ipc:///tmp/kernel-abc-2");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let text = r#"{"ip": "::1", "shell_port": 1, "iopub_port": 2, "stdin_port": 3,
            "control_port": 4, "hb_port": 5}"#;
        let info = ConnectionInfo::from_json(text).unwrap();
        assert_eq!(info.endpoint(1), "tcp://[::1]:1");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let info = ConnectionInfo::from_json(TCP).unwrap();
        let shown = format!("{info:?}");
        assert!(!shown.contains("a0436f6c"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn errors_do_not_quote_values() {
        let text = r#"{"ip": "127.0.0.1", "shell_port": "topsecret", "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": "k"}"#;
        let error = ConnectionInfo::from_json(text).unwrap_err().to_string();
        assert!(!error.contains("topsecret"), "{error}");
        assert!(error.contains("invalid type"), "{error}");
    }

    #[test]
    fn rejects_other_signature_schemes() {
        let text = TCP.replace("hmac-sha256", "hmac-md5");
        assert!(matches!(
            ConnectionInfo::from_json(&text),
            Err(ConnectionError::UnsupportedScheme(_))
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = ConnectionInfo::from_file(Path::new("/nonexistent/kernel-1.json"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/kernel-1.json"), "{error}");
    }
}
