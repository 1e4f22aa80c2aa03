//! The `--port-range LOWER..UPPER` the gateway may impose on a remote kernel.
//!
//! `0..0` (the gateway's default) means any port. A real range must span at
//! least `EG_MIN_PORT_RANGE_SIZE` ports (1000 unless set), as the gateway's
//! own launchers require. Ports are drawn at random inside the range and a
//! taken one is retried, so two kernels on one host do not collide.

use rand::Rng as _;
use std::net::{Ipv4Addr, TcpListener};

/// How many random ports of a range are tried before giving up.
pub const BIND_ATTEMPTS: usize = 32;

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lower: u16,
    pub upper: u16,
}

impl PortRange {
    /// `None` for `0..0`; an error that names the rule for anything else invalid.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let minimum = std::env::var("EG_MIN_PORT_RANGE_SIZE")
            .ok()
            .and_then(|value| value.parse::<u32>().ok())
            .unwrap_or(1000);
        Self::parse_with_minimum(text, minimum)
    }

    fn parse_with_minimum(text: &str, minimum: u32) -> Result<Option<Self>, String> {
        let bad = |why: &str| format!("the port range {text:?} is not valid: {why}");
        let (lower, upper) = text
            .trim()
            .split_once("..")
            .ok_or_else(|| bad("write it LOWER..UPPER, e.g. 40000..41000"))?;
        let lower: u16 = lower
            .trim()
            .parse()
            .map_err(|_| bad("LOWER is not a port"))?;
        let upper: u16 = upper
            .trim()
            .parse()
            .map_err(|_| bad("UPPER is not a port"))?;
        if lower == 0 && upper == 0 {
            return Ok(None);
        }
        if lower == 0 || upper < lower {
            return Err(bad("LOWER must be at least 1 and not above UPPER"));
        }
        if u32::from(upper - lower) < minimum {
            return Err(bad(&format!(
                "it must span at least {minimum} ports (EG_MIN_PORT_RANGE_SIZE)"
            )));
        }
        Ok(Some(Self { lower, upper }))
    }

    /// A random port inside the range.
    pub fn candidate(&self) -> u16 {
        rand::thread_rng().gen_range(self.lower..=self.upper)
    }
}

/// Binds a TCP listener on every interface: on a port of `range`, or on any
/// free port without one.
pub fn bind_listener(range: Option<PortRange>) -> std::io::Result<TcpListener> {
    let Some(range) = range else {
        return TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0));
    };
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, range.candidate())) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no port tried")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_the_gateway_s_launchers() {
        assert_eq!(PortRange::parse_with_minimum("0..0", 1000), Ok(None));
        assert_eq!(
            PortRange::parse_with_minimum("40000..41000", 1000),
            Ok(Some(PortRange {
                lower: 40000,
                upper: 41000
            }))
        );
        for (bad, why) in [
            ("40000..40500", "at least 1000"),
            ("40000-41000", "LOWER..UPPER"),
            ("x..41000", "LOWER is not"),
            ("40000..70000", "UPPER is not"),
            ("41000..40000", "not above UPPER"),
        ] {
            let error = PortRange::parse_with_minimum(bad, 1000).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn listeners_bind_inside_the_range() {
        let range = PortRange {
            lower: 45000,
            upper: 46000,
        };
        let listener = bind_listener(Some(range)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!((45000..=46000).contains(&port), "{port}");
        assert_ne!(bind_listener(None).unwrap().local_addr().unwrap().port(), 0);
    }
}
