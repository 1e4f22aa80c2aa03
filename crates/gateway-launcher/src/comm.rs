//! The communication port: the gateway's signal and shutdown requests.
//!
//! Each request is one TCP connection carrying one JSON object, read to end of
//! stream: `{"signum": N}` (0 = are you alive, 2 = interrupt, 9 and 15 = end)
//! and/or `{"shutdown": 1}` (stop listening). The port is reachable from the
//! network, so a request is obeyed only from the gateway's host or loopback
//! (an SSH tunnel ends there), only for those four signals, and only when it
//! is at most [`MAX_REQUEST_BYTES`] read within [`READ_TIMEOUT`]; everything
//! else is refused and reported, never acted on.

use serde::Deserialize;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

/// A request larger than this is refused unread.
pub const MAX_REQUEST_BYTES: u64 = 4096;

/// A peer that has not finished its request by then is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The signals the gateway sends: poll, interrupt, kill, terminate.
pub const ALLOWED_SIGNALS: [i32; 4] = [0, 2, 9, 15];

/// One request from the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub signum: Option<i32>,
    #[serde(default, deserialize_with = "truthy")]
    pub shutdown: bool,
}

fn truthy<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Bool(value) => value,
        serde_json::Value::Number(number) => number.as_f64().is_some_and(|value| value != 0.0),
        serde_json::Value::String(text) => !text.is_empty(),
        _ => false,
    })
}

impl Request {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|error| format!("not a request: {error}"))
    }
}

/// What the listener saw, for the caller to act on or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommEvent {
    /// Deliver this signal to the kernel (never 0: a poll needs no action).
    Signal(i32),
    /// Not obeyed, and why.
    Refused {
        peer: Option<SocketAddr>,
        why: String,
    },
}

/// Serves requests until a shutdown request (or the listener fails), calling
/// `on_event` for each signal to deliver and each refusal.
pub fn serve(listener: &TcpListener, gateway: &[IpAddr], mut on_event: impl FnMut(CommEvent)) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) => {
                on_event(CommEvent::Refused {
                    peer: None,
                    why: format!("the communication port failed: {error}"),
                });
                return;
            }
        };
        if !is_trusted(peer.ip(), gateway) {
            on_event(CommEvent::Refused {
                peer: Some(peer),
                why: "not the gateway's host".to_owned(),
            });
            continue;
        }
        let mut bytes = Vec::new();
        let read = stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| stream.take(MAX_REQUEST_BYTES + 1).read_to_end(&mut bytes));
        if let Err(error) = read {
            on_event(CommEvent::Refused {
                peer: Some(peer),
                why: format!("unreadable request: {error}"),
            });
            continue;
        }
        if bytes.len() as u64 > MAX_REQUEST_BYTES {
            on_event(CommEvent::Refused {
                peer: Some(peer),
                why: format!("request over {MAX_REQUEST_BYTES} bytes"),
            });
            continue;
        }
        let request = match Request::parse(&bytes) {
            Ok(request) => request,
            Err(why) => {
                on_event(CommEvent::Refused {
                    peer: Some(peer),
                    why,
                });
                continue;
            }
        };
        match request.signum {
            Some(0) | None => {}
            Some(signum) if ALLOWED_SIGNALS.contains(&signum) => {
                on_event(CommEvent::Signal(signum))
            }
            Some(signum) => on_event(CommEvent::Refused {
                peer: Some(peer),
                why: format!("signal {signum} is not one the gateway sends (0, 2, 9, 15)"),
            }),
        }
        if request.shutdown {
            return;
        }
    }
}

fn is_trusted(peer: IpAddr, gateway: &[IpAddr]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    peer.is_loopback() || gateway.contains(&peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::TcpStream;

    fn send(port: u16, bytes: &[u8]) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(bytes).unwrap();
    }

    #[test]
    fn requests_parse_as_the_gateway_writes_them() {
        assert_eq!(
            Request::parse(br#"{"signum": 2}"#).unwrap(),
            Request {
                signum: Some(2),
                shutdown: false
            }
        );
        assert!(Request::parse(br#"{"shutdown": 1}"#).unwrap().shutdown);
        assert!(Request::parse(br#"{"shutdown": true}"#).unwrap().shutdown);
        assert!(!Request::parse(br#"{"shutdown": 0}"#).unwrap().shutdown);
        assert!(Request::parse(b"signum=2").is_err());
    }

    #[test]
    fn signals_are_delivered_bad_requests_refused_and_shutdown_ends_the_loop() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::thread::spawn(move || {
            send(port, br#"{"signum": 0}"#);
            send(port, br#"{"signum": 2}"#);
            send(port, br#"{"signum": 11}"#);
            send(port, b"not json");
            send(port, &vec![b' '; MAX_REQUEST_BYTES as usize + 10]);
            send(port, br#"{"signum": 15, "shutdown": 1}"#);
        });
        let mut events = Vec::new();
        serve(&listener, &[], |event| events.push(event));
        client.join().unwrap();
        let signals: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                CommEvent::Signal(signum) => Some(*signum),
                CommEvent::Refused { .. } => None,
            })
            .collect();
        assert_eq!(signals, vec![2, 15]);
        let refusals: Vec<String> = events
            .iter()
            .filter_map(|event| match event {
                CommEvent::Refused { why, .. } => Some(why.clone()),
                CommEvent::Signal(_) => None,
            })
            .collect();
        assert_eq!(refusals.len(), 3, "{refusals:?}");
        assert!(refusals[0].contains("signal 11"));
        assert!(refusals[1].contains("not a request"));
        assert!(refusals[2].contains("over 4096 bytes"));
    }

    #[test]
    fn only_the_gateway_host_and_loopback_are_obeyed() {
        let gateway: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(is_trusted("127.0.0.1".parse().unwrap(), &[gateway]));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &[gateway]));
        assert!(is_trusted(gateway, &[gateway]));
        assert!(!is_trusted("10.1.2.4".parse().unwrap(), &[gateway]));
    }
}
