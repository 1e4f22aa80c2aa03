//! A Kaggle API client, usable without a kernel: the `%kaggle` magic is a
//! thin adapter over it (argument parsing, output to the cell), and it is
//! built and tested on its own (`cargo test -p ferrolab-kaggle`).
//!
//! It speaks the current Kaggle API (`POST {base}/{package}.{Service}/{Method}`, base `…/api/v1`,
//! with JSON bodies, as the official SDK does) and follows the official CLI's
//! rules for credentials and configuration:
//! - [`env`]: the environment a command sees (the process's, or a notebook's
//!   with its changes); [`config`]: `kaggle.json` and its settings;
//!   [`credentials`]: where the keys come from, in the official order;
//! - [`client`]: the HTTP client (retries, cancel, proxy); [`errors`]: what
//!   fails and the message that says what to do; [`refs`]: competition and
//!   dataset names as typed (slugs or URLs);
//! - [`download`]: one file onto the disk, resumable and checked, through
//!   [`transfer`] (parallel ranged workers) and [`sidecar`] (what a `.part`
//!   file holds), reporting to a [`Progress`]; [`unzip`]: `--unzip`, all or
//!   nothing, never outside the destination;
//! - [`tables`]: listings as aligned text and HTML; [`scrub`]: the last line
//!   of defence that keeps a key a server echoes out of every message.
//!
//! Invariant: no message, log line or `Debug` output includes a key, a token
//! or a signed URL's query string.

pub mod client;
pub mod config;
pub mod credentials;
pub mod download;
pub mod env;
pub mod errors;
pub mod progress;
pub mod refs;
pub mod scrub;
pub mod sidecar;
pub mod tables;
pub mod transfer;
pub mod unzip;

pub use client::{Api, Cancel};
pub use env::Env;
pub use errors::{AuthContext, Explained, KaggleError, Target};
pub use progress::{Progress, Silent};

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps every log line (of every test in this binary) for a scan.
    struct Capture(std::sync::Mutex<Vec<String>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", record.target(), record.args()));
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

    #[test]
    fn secrets_never_reach_messages_or_logs() {
        use client::tests::{api, canned, json};
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        let temp = tempfile::tempdir().unwrap();
        let key = "k3y-that-must-stay-secret";
        std::fs::write(
            temp.path().join("kaggle.json"),
            format!(r#"{{"username":"alice","key":"{key}"}}"#),
        )
        .unwrap();
        let env = Env::of(&[
            ("KAGGLE_CONFIG_DIR", temp.path().to_str().unwrap()),
            ("HOME", temp.path().to_str().unwrap()),
        ]);
        let lookup = credentials::lookup(&env);
        let auth = lookup.found.as_ref().unwrap().auth.clone();
        let header = auth.header();
        // A server that echoes the credentials it was sent, as text and as the header.
        let echo = format!(r#"{{"code":401,"message":"bad key {key} in {header}"}}"#);
        let server = canned(vec![json("401 Unauthorized", &echo)]);
        let error = api(&server, Some(auth.clone()))
            .call(
                client::COMPETITIONS,
                "ListCompetitions",
                &serde_json::json!({}),
            )
            .unwrap_err();
        let auth_context = AuthContext {
            source: lookup.found.as_ref().map(|found| found.source.to_string()),
            tried: lookup.tried.clone(),
            config_dir: temp.path().display().to_string(),
        };
        let shown = errors::explain(error, &Target::competition("titanic"), &auth_context);
        let message = scrub::scrub(&shown.message, &lookup.secrets());
        let basic = header.trim_start_matches("Basic ");
        for text in [&message, &format!("{lookup:?}"), &format!("{auth:?}")] {
            assert!(!text.contains(key), "{text}");
            assert!(!text.contains(basic), "{text}");
        }
        assert!(message.contains("rejected the credentials"), "{message}");
        let logged = CAPTURE.0.lock().unwrap().join("\n");
        assert!(
            logged.contains("ListCompetitions"),
            "nothing logged: {logged}"
        );
        assert!(!logged.contains(key) && !logged.contains(basic), "{logged}");
    }
}
