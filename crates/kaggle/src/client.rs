//! The Kaggle API client: `POST {base}/{package}.{Service}/{Method}` with a
//! lowerCamelCase JSON body, as the current official SDK does.
//!
//! Rules (from the SDK): a JSON body with `code >= 400` is an error even under
//! HTTP 200; 5xx and connection failures are retried with backoff a few times;
//! 429 is retried when `Retry-After` asks for a short wait, else reported with
//! it. Redirects are never followed automatically: a download RPC's `302` is
//! returned to the caller, which fetches the signed URL with [`Api::storage`]
//! — so the credentials go to the API host only, never to a storage host.
//!
//! Base URL: `https://api.kaggle.com/v1`; `KAGGLE_API_ENDPOINT=URL` gives
//! `URL/v1` (unless URL already ends in `/v1`); `KAGGLE_API_ENVIRONMENT`
//! (PROD, LOCALHOST, TEST, STAGING, ADMIN, QA) as in the official SDK.

use crate::credentials::Auth;
use crate::env::Env;
use crate::errors::KaggleError;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub const COMPETITIONS: &str = "competitions.CompetitionApiService";
pub const DATASETS: &str = "datasets.DatasetApiService";
pub const SECURITY: &str = "security.OAuthService";

/// Longest `Retry-After` waited out before giving up with the time to retry.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Whether the user asked to stop (the cell was interrupted).
#[derive(Clone)]
pub struct Cancel(Arc<dyn Fn() -> bool + Send + Sync>);

impl Cancel {
    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Cancel(Arc::new(check))
    }

    #[cfg(test)]
    pub fn never() -> Self {
        Cancel::new(|| false)
    }

    pub fn is_set(&self) -> bool {
        (self.0)()
    }

    /// Sleeps `duration` unless cancelled first (then `false`).
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.is_set() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
        }
    }
}

/// How often and how patiently requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub retries: u32,
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base: Duration::from_millis(300),
        }
    }
}

impl RetryPolicy {
    /// `base * 2^(attempt-1)`, capped at 8 s, plus up to 25% jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(8));
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        exponential + exponential.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// The API base URL (ending in `/v1`) for this environment.
pub fn api_base(env: &Env) -> Result<String, KaggleError> {
    if let Some(endpoint) = env.get("KAGGLE_API_ENDPOINT") {
        let endpoint = endpoint.trim().trim_end_matches('/');
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(KaggleError::other(
                "UsageError",
                format!("KAGGLE_API_ENDPOINT must be an http:// or https:// URL, not `{endpoint}`"),
            ));
        }
        return Ok(if endpoint.ends_with("/v1") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1")
        });
    }
    let environment = env
        .get("KAGGLE_API_ENVIRONMENT")
        .unwrap_or("PROD")
        .to_ascii_uppercase();
    Ok(match environment.as_str() {
        "PROD" => "https://api.kaggle.com/v1",
        "LOCALHOST" => "http://localhost/api/v1",
        "TEST" => "http://localhost:7777/api/v1",
        "STAGING" => "https://staging.kaggle.com/api/v1",
        "ADMIN" => "https://admin.kaggle.com/api/v1",
        "QA" => "https://qa.kaggle.com/api/v1",
        other => {
            return Err(KaggleError::other(
                "UsageError",
                format!(
                    "KAGGLE_API_ENVIRONMENT={other} is not one of PROD, LOCALHOST, TEST, STAGING, ADMIN, QA"
                ),
            ));
        }
    }
    .to_owned())
}

/// `host:port` of a URL, for messages (never the path or query).
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => url.to_owned(),
        },
        Err(_) => "the server".to_owned(),
    }
}

/// A URL without its query string (signed URLs carry credentials there).
pub fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// Why a request failed to reach the server, in words.
pub fn network_error(error: &reqwest::Error, url: &str) -> KaggleError {
    let reason = if error.is_timeout() {
        "the connection timed out".to_owned()
    } else {
        let mut innermost = None;
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            innermost = Some(cause.to_string());
            source = cause.source();
        }
        let text = innermost.unwrap_or_else(|| {
            if error.is_connect() {
                "could not connect".to_owned()
            } else {
                "the connection failed".to_owned()
            }
        });
        without_query(&text)
    };
    KaggleError::Network {
        host: host_of(url),
        reason,
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The message of an error body: JSON `message`/`error`, GCS XML
/// `<Message>`, else the start of the text.
pub fn error_message(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        for key in ["message", "error", "errorMessage"] {
            match value.get(key) {
                Some(Value::String(text)) if !text.is_empty() => return text.clone(),
                Some(Value::Object(inner)) => {
                    if let Some(Value::String(text)) = inner.get("message") {
                        return text.clone();
                    }
                }
                _ => {}
            }
        }
        return String::new();
    }
    if let Some(start) = body.find("<Message>")
        && let Some(end) = body[start..].find("</Message>")
    {
        return body[start + 9..start + end].to_owned();
    }
    let text: String = body.trim().chars().take(300).collect();
    if text.starts_with('<') {
        String::new()
    } else {
        text
    }
}

/// A JSON number or numeric string (int64 values come as either).
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_f64().map(|f| f as u64)),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// What an RPC answered.
pub enum Answer {
    Json(Value),
    /// A redirect (to a signed URL), absolute.
    Redirect(String),
    /// Bytes served by the RPC itself (a leaderboard zip).
    Body(Response),
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"))
}

pub struct Api {
    http: Client,
    base: String,
    auth: Option<Auth>,
    pub cancel: Cancel,
    pub retry: RetryPolicy,
}

impl Api {
    pub fn new(env: &Env, auth: Option<Auth>, cancel: Cancel) -> Result<Api, KaggleError> {
        Self::with_base(api_base(env)?, auth, cancel, proxy(env))
    }

    pub fn with_base(
        base: String,
        auth: Option<Auth>,
        cancel: Cancel,
        proxy: Option<String>,
    ) -> Result<Api, KaggleError> {
        let mut builder = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ferrolab/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            // Per read (the blocking client waits this long for each chunk).
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if let Some(proxy) = proxy {
            let proxy = reqwest::Proxy::all(&proxy).map_err(|_| {
                KaggleError::other(
                    "UsageError",
                    format!(
                        "the proxy `{}` is not a valid URL (KAGGLE_PROXY or `%kaggle config set -n proxy`)",
                        ferrolab_secrets::hide_url_passwords(&without_query(&proxy))
                    ),
                )
            })?;
            builder = builder.proxy(proxy);
        }
        let http = builder.build().map_err(|error| {
            KaggleError::Protocol(format!("cannot start the HTTP client: {error}"))
        })?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            cancel,
            retry: RetryPolicy::default(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn interrupted(&self) -> KaggleError {
        KaggleError::Interrupted("interrupted while talking to Kaggle".to_owned())
    }

    fn wait(&self, duration: Duration) -> Result<(), KaggleError> {
        if self.cancel.sleep(duration) {
            Ok(())
        } else {
            Err(self.interrupted())
        }
    }

    /// Calls a JSON method; the answer's object (an empty one for `{}`).
    pub fn call(&self, service: &str, method: &str, body: &Value) -> Result<Value, KaggleError> {
        match self.exchange(service, method, body, true)? {
            Answer::Json(value) => Ok(value),
            Answer::Redirect(_) => Err(KaggleError::Protocol(format!(
                "{method} answered with a redirect"
            ))),
            Answer::Body(_) => Err(KaggleError::Protocol(format!(
                "{method} did not answer JSON"
            ))),
        }
    }

    /// Like [`call`](Self::call), but never retried after the request was
    /// sent (for methods that must not run twice, like CreateSubmission).
    pub fn call_once(
        &self,
        service: &str,
        method: &str,
        body: &Value,
    ) -> Result<Value, KaggleError> {
        match self.exchange(service, method, body, false)? {
            Answer::Json(value) => Ok(value),
            _ => Err(KaggleError::Protocol(format!(
                "{method} did not answer JSON"
            ))),
        }
    }

    /// Calls an RPC and returns its answer as is (for the download methods).
    pub fn exchange(
        &self,
        service: &str,
        method: &str,
        body: &Value,
        retry_after_send: bool,
    ) -> Result<Answer, KaggleError> {
        let url = format!("{}/{service}/{method}", self.base);
        let payload = serde_json::to_vec(body).unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.cancel.is_set() {
                return Err(self.interrupted());
            }
            let mut request = self
                .http
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json")
                .body(payload.clone());
            if let Some(auth) = &self.auth {
                request = request.header(header::AUTHORIZATION, auth.header());
            }
            let response = match request.send() {
                Ok(response) => response,
                Err(error) => {
                    log::debug!("kaggle: POST {url} failed: {error}");
                    if error.is_connect() && attempt <= self.retry.retries {
                        self.wait(self.retry.delay(attempt))?;
                        continue;
                    }
                    return Err(network_error(&error, &url));
                }
            };
            let status = response.status().as_u16();
            log::debug!("kaggle: POST {url} -> {status}");
            let wait_hint = retry_after(response.headers(), SystemTime::now());
            let failure = match self.read_answer(&url, response)? {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let (code, message) = failure;
            let retryable = code == 429 || (code >= 500 && retry_after_send);
            if retryable && attempt <= self.retry.retries {
                let delay = match (code, wait_hint) {
                    (429, Some(wait)) if wait > MAX_RETRY_WAIT => {
                        return Err(KaggleError::Status {
                            status: code,
                            message,
                            retry_after: Some(wait),
                            attempts: attempt,
                        });
                    }
                    (429, Some(wait)) => wait,
                    _ => self.retry.delay(attempt),
                };
                self.wait(delay)?;
                continue;
            }
            return Err(KaggleError::Status {
                status: code,
                message,
                retry_after: wait_hint,
                attempts: attempt,
            });
        }
    }

    /// The answer, or the failing status and message.
    fn read_answer(
        &self,
        url: &str,
        response: Response,
    ) -> Result<Result<Answer, (u16, String)>, KaggleError> {
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            return Ok(match location {
                Some(location) => {
                    let absolute = reqwest::Url::parse(url)
                        .and_then(|base| base.join(&location))
                        .map(|joined| joined.to_string())
                        .unwrap_or(location);
                    Ok(Answer::Redirect(absolute))
                }
                None => Err((status, "a redirect without a Location".to_owned())),
            });
        }
        if is_json(response.headers()) {
            let text = response
                .text()
                .map_err(|error| network_error(&error, url))?;
            let value = serde_json::from_str::<Value>(&text).ok();
            let code = value
                .as_ref()
                .and_then(|value| value.get("code"))
                .and_then(as_u64)
                .filter(|code| *code >= 400);
            if status >= 400 {
                return Ok(Err((status, error_message(&text))));
            }
            if let Some(code) = code {
                return Ok(Err((code as u16, error_message(&text))));
            }
            return match value {
                Some(Value::Null) | None if text.trim().is_empty() => {
                    Ok(Ok(Answer::Json(Value::Object(Default::default()))))
                }
                Some(value) => Ok(Ok(Answer::Json(value))),
                None => Err(KaggleError::Protocol(format!(
                    "the answer to {} is not valid JSON",
                    url.rsplit('/').next().unwrap_or(url)
                ))),
            };
        }
        if status >= 400 {
            let text = response.text().unwrap_or_default();
            return Ok(Err((status, error_message(&text))));
        }
        Ok(Ok(Answer::Body(response)))
    }

    /// A GET to a storage (signed) URL: no credentials; redirects followed
    /// by hand (still without credentials). Any status is returned.
    pub fn storage(
        &self,
        url: &str,
        headers: &[(header::HeaderName, String)],
    ) -> Result<(Response, String), KaggleError> {
        let mut url = url.to_owned();
        for _ in 0..5 {
            let mut request: RequestBuilder = self.http.get(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request
                .send()
                .map_err(|error| network_error(&error, &url))?;
            log::debug!(
                "kaggle: GET {} -> {}",
                without_query(&url),
                response.status().as_u16()
            );
            if response.status().is_redirection()
                && let Some(location) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|value| value.to_str().ok())
            {
                url = reqwest::Url::parse(&url)
                    .and_then(|base| base.join(location))
                    .map(|joined| joined.to_string())
                    .unwrap_or_else(|_| location.to_owned());
                continue;
            }
            return Ok((response, url));
        }
        Err(KaggleError::Protocol(format!(
            "too many redirects from {}",
            host_of(&url)
        )))
    }

    /// PUTs `bytes` to an upload URL (no credentials), retrying 5xx and
    /// broken connections. Success is 200 or 201.
    pub fn upload(&self, url: &str, bytes: &[u8]) -> Result<(), KaggleError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.cancel.is_set() {
                return Err(self.interrupted());
            }
            let result = self.http.put(url).body(bytes.to_vec()).send();
            let failure = match result {
                Ok(response) if matches!(response.status().as_u16(), 200 | 201) => return Ok(()),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let message = error_message(&response.text().unwrap_or_default());
                    KaggleError::Status {
                        status,
                        message,
                        retry_after: None,
                        attempts: attempt,
                    }
                }
                Err(error) => network_error(&error, url),
            };
            let retryable = match &failure {
                KaggleError::Status { status, .. } => *status >= 500,
                _ => true,
            };
            if !retryable || attempt > self.retry.retries {
                return Err(failure);
            }
            self.wait(self.retry.delay(attempt))?;
        }
    }
}

/// The proxy from `KAGGLE_PROXY` or the config file's `proxy`.
fn proxy(env: &Env) -> Option<String> {
    let file = crate::config::read_config(&crate::config::config_dir(env)).ok()?;
    crate::config::setting(env, &file, "proxy").map(|(value, _)| value)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credentials::Secret;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }
    }

    /// A loopback server answering each request with the next canned
    /// response (raw HTTP/1.1 bytes); it records what it was sent.
    pub struct Canned {
        pub url: String,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    pub fn canned(responses: Vec<Vec<u8>>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for response in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((key, value)) = header.split_once(':') {
                        headers.push((key.trim().to_owned(), value.trim().to_owned()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                record.lock().unwrap().push(Seen {
                    method,
                    path,
                    headers,
                    body,
                });
                let mut stream = stream;
                let _ = stream.write_all(&response);
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Canned { url, seen }
    }

    pub fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (key, value) in headers {
            text.push_str(&format!("{key}: {value}\r\n"));
        }
        if !headers
            .iter()
            .any(|(key, _)| key.eq_ignore_ascii_case("content-length"))
        {
            text.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        text.push_str("\r\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    pub fn json(status: &str, body: &str) -> Vec<u8> {
        response(
            status,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn api(server: &Canned, auth: Option<Auth>) -> Api {
        let mut api =
            Api::with_base(format!("{}/v1", server.url), auth, Cancel::never(), None).unwrap();
        api.retry = RetryPolicy {
            retries: 3,
            base: Duration::from_millis(1),
        };
        api
    }

    #[test]
    fn endpoint_override_and_environments() {
        let env = Env::of(&[("KAGGLE_API_ENDPOINT", "http://127.0.0.1:8080/")]);
        assert_eq!(api_base(&env).unwrap(), "http://127.0.0.1:8080/v1");
        let env = Env::of(&[("KAGGLE_API_ENDPOINT", "http://h:1/api/v1")]);
        assert_eq!(api_base(&env).unwrap(), "http://h:1/api/v1");
        let env = Env::of(&[("KAGGLE_API_ENDPOINT", "http://h:1/api")]);
        assert_eq!(api_base(&env).unwrap(), "http://h:1/api/v1");
        assert_eq!(
            api_base(&Env::default()).unwrap(),
            "https://api.kaggle.com/v1"
        );
        let env = Env::of(&[("KAGGLE_API_ENVIRONMENT", "localhost")]);
        assert_eq!(api_base(&env).unwrap(), "http://localhost/api/v1");
        let env = Env::of(&[("KAGGLE_API_ENVIRONMENT", "TEST")]);
        assert_eq!(api_base(&env).unwrap(), "http://localhost:7777/api/v1");
        assert!(api_base(&Env::of(&[("KAGGLE_API_ENVIRONMENT", "MARS")])).is_err());
        assert!(api_base(&Env::of(&[("KAGGLE_API_ENDPOINT", "ftp://x")])).is_err());
    }

    #[test]
    fn posts_camel_case_json_with_bearer_and_reads_the_answer() {
        let server = canned(vec![json(
            "200 OK",
            r#"{"competitions":[],"nextPageToken":""}"#,
        )]);
        let api = api(&server, Some(Auth::Bearer(Secret::new("KGAT_abc"))));
        let answer = api
            .call(
                COMPETITIONS,
                "ListCompetitions",
                &serde_json::json!({"sortBy": "COMPETITION_SORT_BY_BEST"}),
            )
            .unwrap();
        assert_eq!(answer["nextPageToken"], "");
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen[0].method, "POST");
        assert_eq!(
            seen[0].path,
            "/v1/competitions.CompetitionApiService/ListCompetitions"
        );
        assert_eq!(seen[0].header("authorization"), Some("Bearer KGAT_abc"));
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        assert_eq!(seen[0].body, br#"{"sortBy":"COMPETITION_SORT_BY_BEST"}"#);
    }

    #[test]
    fn json_code_is_an_error_even_under_200() {
        let server = canned(vec![json(
            "200 OK",
            r#"{"code":401,"message":"Unauthenticated"}"#,
        )]);
        let error = api(&server, None)
            .call(COMPETITIONS, "ListCompetitions", &serde_json::json!({}))
            .unwrap_err();
        assert!(
            matches!(&error, KaggleError::Status { status: 401, message, .. } if message == "Unauthenticated"),
            "{error:?}"
        );
    }

    #[test]
    fn server_errors_are_retried_then_succeed_or_reported() {
        let server = canned(vec![
            json(
                "500 Internal Server Error",
                r#"{"code":500,"message":"boom"}"#,
            ),
            json("503 Service Unavailable", "{}"),
            json("200 OK", r#"{"ok":true}"#),
        ]);
        let answer = api(&server, None)
            .call(COMPETITIONS, "ListDataFiles", &serde_json::json!({}))
            .unwrap();
        assert_eq!(answer["ok"], true);
        assert_eq!(server.seen.lock().unwrap().len(), 3);

        let failing = canned(vec![
            json(
                "500 Internal Server Error",
                r#"{"message":"down"}"#
            );
            4
        ]);
        let error = api(&failing, None)
            .call(COMPETITIONS, "ListDataFiles", &serde_json::json!({}))
            .unwrap_err();
        assert!(
            matches!(
                error,
                KaggleError::Status {
                    status: 500,
                    attempts: 4,
                    ..
                }
            ),
            "{error:?}"
        );
        // Not retried once sent, for methods that must not run twice.
        let once = canned(vec![
            json("500 Internal Server Error", "{}"),
            json("200 OK", "{}"),
        ]);
        assert!(
            api(&once, None)
                .call_once(COMPETITIONS, "CreateSubmission", &serde_json::json!({}))
                .is_err()
        );
        assert_eq!(once.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn rate_limits_wait_briefly_or_report_when() {
        let short = canned(vec![
            response("429 Too Many Requests", &[("Retry-After", "0")], b""),
            json("200 OK", "{}"),
        ]);
        assert!(
            api(&short, None)
                .call(DATASETS, "ListDatasets", &serde_json::json!({}))
                .is_ok()
        );
        let long = canned(vec![response(
            "429 Too Many Requests",
            &[("Retry-After", "3600")],
            b"",
        )]);
        let error = api(&long, None)
            .call(DATASETS, "ListDatasets", &serde_json::json!({}))
            .unwrap_err();
        assert!(
            matches!(error, KaggleError::Status { status: 429, retry_after: Some(wait), .. } if wait == Duration::from_secs(3600)),
            "{error:?}"
        );
        let mut headers = HeaderMap::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        headers.insert(header::RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
    }

    #[test]
    fn redirects_are_returned_and_storage_gets_no_credentials() {
        let server = canned(vec![]);
        let target = format!("{}/bucket/train.csv?X-Goog-Signature=abc", server.url);
        drop(server);
        let redirecting = canned(vec![response("302 Found", &[("Location", &target)], b"")]);
        let api = api(&redirecting, Some(Auth::Bearer(Secret::new("KGAT_x"))));
        match api
            .exchange(
                COMPETITIONS,
                "DownloadDataFile",
                &serde_json::json!({}),
                true,
            )
            .unwrap()
        {
            Answer::Redirect(url) => assert_eq!(url, target),
            _ => panic!("expected a redirect"),
        }
        let storage = canned(vec![response("200 OK", &[], b"a,b\n")]);
        let (response, _) = api
            .storage(&format!("{}/bucket/train.csv?sig=1", storage.url), &[])
            .unwrap();
        assert_eq!(response.text().unwrap(), "a,b\n");
        let seen = storage.seen.lock().unwrap();
        assert_eq!(seen[0].header("authorization"), None);
    }

    #[test]
    fn unreachable_host_names_host_and_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let mut api =
            Api::with_base(format!("http://{address}/v1"), None, Cancel::never(), None).unwrap();
        api.retry.base = Duration::from_millis(1);
        let error = api
            .call(COMPETITIONS, "ListCompetitions", &serde_json::json!({}))
            .unwrap_err();
        match error {
            KaggleError::Network { host, reason } => {
                assert_eq!(host, address.to_string());
                assert!(reason.to_lowercase().contains("refused"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_messages_from_json_xml_and_text() {
        assert_eq!(
            error_message(r#"{"code":403,"message":"accept rules"}"#),
            "accept rules"
        );
        assert_eq!(
            error_message(
                "<Error><Code>ExpiredToken</Code><Message>Token expired</Message></Error>"
            ),
            "Token expired"
        );
        assert_eq!(error_message("plain words"), "plain words");
        assert_eq!(as_u64(&serde_json::json!("42")), Some(42));
        assert_eq!(as_u64(&serde_json::json!(42)), Some(42));
        assert_eq!(without_query("http://h/p/f.zip?sig=1"), "http://h/p/f.zip");
    }
}
