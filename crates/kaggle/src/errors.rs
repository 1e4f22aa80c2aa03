//! What can go wrong talking to Kaggle, and how each failure becomes the one
//! `error` output that says what to do: 401 → how to set credentials and which
//! sources were tried; 403 → the rules page of *that* competition; 404 → the
//! name that was not found; 429 → when to retry; a network error → which host
//! and why.
//!
//! Messages never include a key, a token or a signed URL's query string.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub enum KaggleError {
    /// No credentials anywhere.
    NoCredentials { tried: Vec<String> },
    /// An HTTP (or JSON `code`) error from the API or the storage host.
    Status {
        status: u16,
        message: String,
        /// When the server said to retry (429).
        retry_after: Option<Duration>,
        /// How many times it was tried (5xx are retried).
        attempts: u32,
    },
    /// The server could not be reached or the connection broke.
    Network { host: String, reason: String },
    /// The server answered something this client does not understand.
    Protocol(String),
    /// A local file problem.
    Io(String),
    /// The user pressed interrupt.
    Interrupted(String),
    /// Anything else, already worded for the user.
    Other {
        ename: &'static str,
        message: String,
    },
}

impl KaggleError {
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        KaggleError::Status {
            status,
            message: message.into(),
            retry_after: None,
            attempts: 1,
        }
    }

    pub fn other(ename: &'static str, message: impl Into<String>) -> Self {
        KaggleError::Other {
            ename,
            message: message.into(),
        }
    }
}

impl From<std::io::Error> for KaggleError {
    fn from(error: std::io::Error) -> Self {
        KaggleError::Io(error.to_string())
    }
}

/// What a request was about, for the wording of its errors.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// e.g. "competition `titanic`" or "file `train.csv` of competition `titanic`".
    pub noun: String,
    /// The competition, when there is one (for the rules URL).
    pub competition: Option<String>,
    /// The dataset `owner/slug`, when there is one.
    pub dataset: Option<String>,
}

impl Target {
    pub fn competition(slug: &str) -> Self {
        Target {
            noun: format!("competition `{slug}`"),
            competition: Some(slug.to_owned()),
            dataset: None,
        }
    }

    pub fn dataset(reference: &str) -> Self {
        Target {
            noun: format!("dataset `{reference}`"),
            competition: None,
            dataset: Some(reference.to_owned()),
        }
    }

    pub fn none() -> Self {
        Target::default()
    }

    /// The same target, narrowed to one file of it.
    pub fn file(&self, name: &str) -> Self {
        Target {
            noun: format!("file `{name}` of {}", self.noun),
            ..self.clone()
        }
    }
}

/// A failure worded for the user: an error name (`KaggleAuthError`,
/// `KaggleForbidden`, …) and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub ename: &'static str,
    pub message: String,
}

impl Explained {
    fn new(ename: &'static str, message: impl Into<String>) -> Self {
        Explained {
            ename,
            message: message.into(),
        }
    }
}

/// The credential context a 401 is explained with.
#[derive(Debug, Clone, Default)]
pub struct AuthContext {
    /// Where the rejected credentials came from (None: none were sent).
    pub source: Option<String>,
    pub tried: Vec<String>,
    pub config_dir: String,
}

const HOW_TO_SET: &str = "Set them with `%kaggle login` (asks for your username and API key; \
or `%kaggle login --token KGAT_...`), or with `%env KAGGLE_API_TOKEN=KGAT_...`, or \
`%env KAGGLE_USERNAME=...` and `%env KAGGLE_KEY=...`. Create a token at \
https://www.kaggle.com/settings (API → Create New Token).";

fn server_says(message: &str) -> String {
    if message.trim().is_empty() {
        String::new()
    } else {
        format!(" Kaggle said: {}", message.trim())
    }
}

/// When to retry, in words: "in 3600 s (at 14:05:00 UTC)".
pub fn retry_words(after: Option<Duration>, now: SystemTime) -> String {
    match after {
        Some(after) => {
            let at = chrono::DateTime::<chrono::Utc>::from(now + after);
            format!(
                "Retry in {} s (after {} UTC).",
                after.as_secs().max(1),
                at.format("%H:%M:%S")
            )
        }
        None => "Wait a minute, then retry.".to_owned(),
    }
}

/// The user-facing error for `error`, about `target`.
pub fn explain(error: KaggleError, target: &Target, auth: &AuthContext) -> Explained {
    match error {
        KaggleError::NoCredentials { tried } => Explained::new(
            "KaggleAuthError",
            format!(
                "No Kaggle credentials found. {HOW_TO_SET}\nLooked in, in order:\n  {}",
                tried.join("\n  ")
            ),
        ),
        KaggleError::Status {
            status,
            message,
            retry_after,
            attempts,
        } => status_error(status, &message, retry_after, attempts, target, auth),
        KaggleError::Network { host, reason } => Explained::new(
            "KaggleNetworkError",
            format!(
                "Could not reach {host}: {reason}. Check the network connection{}.",
                if host.contains("kaggle.com") || host.contains("googleapis") {
                    ""
                } else {
                    " and KAGGLE_API_ENDPOINT"
                }
            ),
        ),
        KaggleError::Protocol(message) => Explained::new(
            "KaggleError",
            format!("Unexpected answer from Kaggle: {message}"),
        ),
        KaggleError::Io(message) => Explained::new("KaggleIOError", message),
        KaggleError::Interrupted(message) => Explained::new("Interrupted", message),
        KaggleError::Other { ename, message } => Explained::new(ename, message),
    }
}

fn status_error(
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
    attempts: u32,
    target: &Target,
    auth: &AuthContext,
) -> Explained {
    let said = server_says(message);
    match status {
        401 => {
            let rejected = match &auth.source {
                Some(source) => format!(
                    "Kaggle rejected the credentials from {source} (401 Unauthorized).{said}"
                ),
                None => format!("Kaggle needs credentials for this (401 Unauthorized).{said}"),
            };
            Explained::new(
                "KaggleAuthError",
                format!(
                    "{rejected}\n{HOW_TO_SET} The configuration directory is {}.\nSources, in order:\n  {}",
                    if auth.config_dir.is_empty() {
                        "~/.kaggle"
                    } else {
                        &auth.config_dir
                    },
                    auth.tried.join("\n  ")
                ),
            )
        }
        403 => {
            let advice = if let Some(slug) = &target.competition {
                format!(
                    "Accept the rules of competition `{slug}` at https://www.kaggle.com/competitions/{slug}/rules \
                     (it cannot be done through the API), then run this again."
                )
            } else if let Some(dataset) = &target.dataset {
                format!(
                    "Dataset `{dataset}` may be private or need its terms accepted at https://www.kaggle.com/datasets/{dataset}."
                )
            } else {
                "Your account does not have access to this.".to_owned()
            };
            Explained::new("KaggleForbidden", format!("403 Forbidden.{said}\n{advice}"))
        }
        404 => {
            let what = if target.noun.is_empty() {
                "What was asked for".to_owned()
            } else {
                let mut noun = target.noun.clone();
                if let Some(first) = noun.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                noun
            };
            let hint = if target.competition.is_some() {
                " Check the spelling: the name is the last part of https://www.kaggle.com/competitions/NAME (`%kaggle competitions list -s TEXT` searches)."
            } else if target.dataset.is_some() {
                " Check the spelling: datasets are named OWNER/SLUG as in https://www.kaggle.com/datasets/OWNER/SLUG (`%kaggle datasets list -s TEXT` searches)."
            } else {
                ""
            };
            Explained::new(
                "KaggleNotFound",
                format!("{what} was not found (404).{said}{hint}"),
            )
        }
        429 => Explained::new(
            "KaggleRateLimited",
            format!(
                "Kaggle is rate-limiting requests (429 Too Many Requests).{said} {}",
                retry_words(retry_after, SystemTime::now())
            ),
        ),
        500..=599 => Explained::new(
            "KaggleServerError",
            format!(
                "Kaggle's server failed with HTTP {status} ({} {}).{said} This is on Kaggle's side: try again in a few minutes.",
                attempts,
                if attempts == 1 { "try" } else { "tries" }
            ),
        ),
        _ => Explained::new(
            "KaggleError",
            format!(
                "Kaggle answered HTTP {status}{}.{said}",
                if target.noun.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", target.noun)
                }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> KaggleError {
        KaggleError::status(code, message)
    }

    #[test]
    fn forbidden_names_the_rules_page_of_that_competition() {
        let error = explain(
            status(
                403,
                "You must accept this competition's rules before you'll be able to download files.",
            ),
            &Target::competition("spaceship-titanic").file("train.csv"),
            &AuthContext::default(),
        );
        assert_eq!(error.ename, "KaggleForbidden");
        assert!(
            error
                .message
                .contains("https://www.kaggle.com/competitions/spaceship-titanic/rules"),
            "{}",
            error.message
        );
        assert!(error.message.contains("You must accept"));
    }

    #[test]
    fn not_found_names_the_slug_and_unauthorized_lists_sources() {
        let error = explain(
            status(404, "Not found"),
            &Target::competition("titanicc"),
            &AuthContext::default(),
        );
        assert!(
            error
                .message
                .starts_with("Competition `titanicc` was not found"),
            "{}",
            error.message
        );
        let auth = AuthContext {
            source: Some("the KAGGLE_API_TOKEN environment variable".into()),
            tried: vec![
                "KAGGLE_API_TOKEN (set)".into(),
                "/c/kaggle.json (no such file)".into(),
            ],
            config_dir: "/c".into(),
        };
        let error = explain(status(401, "Unauthenticated"), &Target::none(), &auth);
        assert_eq!(error.ename, "KaggleAuthError");
        assert!(
            error
                .message
                .contains("from the KAGGLE_API_TOKEN environment variable")
        );
        assert!(error.message.contains("%kaggle login"));
        assert!(error.message.contains("/c/kaggle.json (no such file)"));
    }

    #[test]
    fn rate_limit_says_when_and_network_says_where() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
        assert_eq!(
            retry_words(Some(Duration::from_secs(90)), now),
            "Retry in 90 s (after 01:01:30 UTC)."
        );
        let error = explain(
            KaggleError::Status {
                status: 429,
                message: String::new(),
                retry_after: Some(Duration::from_secs(3600)),
                attempts: 1,
            },
            &Target::none(),
            &AuthContext::default(),
        );
        assert!(
            error.message.contains("Retry in 3600 s"),
            "{}",
            error.message
        );
        let error = explain(
            KaggleError::Network {
                host: "127.0.0.1:9".into(),
                reason: "connection refused".into(),
            },
            &Target::none(),
            &AuthContext::default(),
        );
        assert_eq!(
            error.message,
            "Could not reach 127.0.0.1:9: connection refused. Check the network connection and KAGGLE_API_ENDPOINT."
        );
        let error = explain(status(503, ""), &Target::none(), &AuthContext::default());
        assert!(error.message.contains("Kaggle's side"));
    }
}
