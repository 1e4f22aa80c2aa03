//! Kaggle credentials, found in the official CLI's order:
//! 1. `KAGGLE_API_TOKEN` (the token, or the path of a file holding it);
//! 2. an `access_token` (or `access_token.txt`) file in the config directory
//!    (and in `~/.kaggle`, where the official CLI always looks);
//! 3. `KAGGLE_USERNAME` + `KAGGLE_KEY`;
//! 4. `username` + `key` in `kaggle.json` (see [`config`](crate::config)).
//!
//! Tokens go as `Authorization: Bearer`; a legacy key as HTTP Basic, except a
//! `KGAT_` token pasted where a key belongs, which only works as Bearer.
//!
//! Invariant: a key or token lives only in a [`Secret`], whose `Debug` prints
//! `***` and which has no `Display`; the header value is built at the last
//! moment. The lookup records which sources were tried, for error messages,
//! never their contents.

use crate::config::{self, CONFIG_FILE};
use crate::env::Env;
use base64::Engine as _;
use std::fmt;
use std::path::{Path, PathBuf};

/// A key or token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How requests are authorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Bearer(Secret),
    Basic { username: String, key: Secret },
}

impl Auth {
    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        match self {
            Auth::Bearer(token) => format!("Bearer {}", token.expose()),
            Auth::Basic { username, key } => {
                let pair = format!("{username}:{}", key.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        }
    }

    pub fn secret(&self) -> &Secret {
        match self {
            Auth::Bearer(token) => token,
            Auth::Basic { key, .. } => key,
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Auth::Bearer(_) => "an access token (Bearer)",
            Auth::Basic { .. } => "a username and API key (HTTP Basic)",
        }
    }
}

/// Where the credentials in use came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    TokenVariable,
    TokenVariableFile(PathBuf),
    TokenFile(PathBuf),
    KeyVariables,
    ConfigFile(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::TokenVariable => write!(f, "the KAGGLE_API_TOKEN environment variable"),
            Source::TokenVariableFile(path) => {
                write!(f, "the file {} named by KAGGLE_API_TOKEN", path.display())
            }
            Source::TokenFile(path) => write!(f, "the token file {}", path.display()),
            Source::KeyVariables => write!(
                f,
                "the KAGGLE_USERNAME and KAGGLE_KEY environment variables"
            ),
            Source::ConfigFile(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub auth: Auth,
    /// Known for keys; for tokens only after the server says whose it is.
    pub username: Option<String>,
    pub source: Source,
}

/// The result of looking for credentials.
#[derive(Debug, Default)]
pub struct Lookup {
    pub found: Option<Credentials>,
    /// Every source, in order, with what was found there (no values).
    pub tried: Vec<String>,
    /// Sources that also hold credentials but rank lower.
    pub shadowed: Vec<Source>,
    /// Warnings to show (a key file others can read; a broken file).
    pub warnings: Vec<String>,
}

impl Lookup {
    fn offer(&mut self, credentials: Credentials) {
        if self.found.is_none() {
            self.found = Some(credentials);
        } else {
            self.shadowed.push(credentials.source);
        }
    }

    /// Every secret found anywhere (to scrub from output, in case a server
    /// echoes one back).
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Some(credentials) = &self.found {
            secrets.push(credentials.auth.secret().expose().to_owned());
            if let Auth::Basic { username, key } = &credentials.auth {
                secrets.push(format!("{username}:{}", key.expose()));
            }
        }
        secrets
    }
}

fn key_auth(username: Option<&str>, key: &str) -> Option<Auth> {
    let key = key.trim();
    if key.starts_with("KGAT_") {
        return Some(Auth::Bearer(Secret::new(key)));
    }
    username.map(|username| Auth::Basic {
        username: username.trim().to_owned(),
        key: Secret::new(key),
    })
}

fn read_token(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

/// The token files, in order: the config directory's, then `~/.kaggle`'s.
pub fn token_files(env: &Env) -> Vec<PathBuf> {
    let mut dirs = vec![config::config_dir(env)];
    if let Some(home) = env.home() {
        let home_dir = home.join(".kaggle");
        if !dirs.contains(&home_dir) {
            dirs.push(home_dir);
        }
    }
    dirs.iter()
        .flat_map(|dir| [dir.join("access_token"), dir.join("access_token.txt")])
        .collect()
}

/// Looks in every source, in order.
pub fn lookup(env: &Env) -> Lookup {
    let mut lookup = Lookup::default();

    match env.get("KAGGLE_API_TOKEN") {
        Some(value) => {
            let value = value.trim();
            let as_path = Path::new(value);
            if as_path.is_file() {
                match read_token(as_path) {
                    Some(token) => {
                        lookup
                            .tried
                            .push(format!("KAGGLE_API_TOKEN (the file {})", as_path.display()));
                        lookup.offer(Credentials {
                            auth: Auth::Bearer(Secret::new(token)),
                            username: None,
                            source: Source::TokenVariableFile(as_path.to_path_buf()),
                        });
                    }
                    None => lookup.tried.push(format!(
                        "KAGGLE_API_TOKEN (names the file {}, which is empty)",
                        as_path.display()
                    )),
                }
            } else {
                lookup.tried.push("KAGGLE_API_TOKEN (set)".to_owned());
                lookup.offer(Credentials {
                    auth: Auth::Bearer(Secret::new(value)),
                    username: None,
                    source: Source::TokenVariable,
                });
            }
        }
        None => lookup.tried.push("KAGGLE_API_TOKEN (not set)".to_owned()),
    }

    let mut token_file_seen = false;
    for path in token_files(env) {
        match read_token(&path) {
            Some(token) => {
                lookup.tried.push(format!("{} (found)", path.display()));
                lookup.offer(Credentials {
                    auth: Auth::Bearer(Secret::new(token)),
                    username: None,
                    source: Source::TokenFile(path),
                });
                token_file_seen = true;
            }
            None if path.exists() => {
                lookup.tried.push(format!("{} (empty)", path.display()));
            }
            None => {}
        }
    }
    if !token_file_seen {
        let dir = config::config_dir(env);
        lookup
            .tried
            .push(format!("{}/access_token (no such file)", dir.display()));
    }

    let username = env.get("KAGGLE_USERNAME");
    match (username, env.get("KAGGLE_KEY")) {
        (username, Some(key)) => match key_auth(username, key) {
            Some(auth) => {
                lookup
                    .tried
                    .push("KAGGLE_USERNAME and KAGGLE_KEY (set)".to_owned());
                lookup.offer(Credentials {
                    auth,
                    username: username.map(str::to_owned),
                    source: Source::KeyVariables,
                });
            }
            None => lookup
                .tried
                .push("KAGGLE_KEY (set, but KAGGLE_USERNAME is not)".to_owned()),
        },
        (Some(_), None) => lookup
            .tried
            .push("KAGGLE_USERNAME (set, but KAGGLE_KEY is not)".to_owned()),
        (None, None) => lookup
            .tried
            .push("KAGGLE_USERNAME and KAGGLE_KEY (not set)".to_owned()),
    }

    let dir = config::config_dir(env);
    match config::read_config(&dir) {
        Ok(file) if file.exists => {
            let username = file.string("username");
            match file.string("key").and_then(|key| key_auth(username, key)) {
                Some(auth) => {
                    lookup
                        .tried
                        .push(format!("{} (found)", file.path.display()));
                    if let Some(warning) = config::permission_warning(&file.path) {
                        lookup.warnings.push(warning);
                    }
                    lookup.offer(Credentials {
                        auth,
                        username: username.map(str::to_owned),
                        source: Source::ConfigFile(file.path.clone()),
                    });
                }
                None => lookup.tried.push(format!(
                    "{} (no \"username\" and \"key\" in it)",
                    file.path.display()
                )),
            }
        }
        Ok(file) => lookup
            .tried
            .push(format!("{} (no such file)", file.path.display())),
        Err(problem) => {
            lookup
                .tried
                .push(format!("{} (unreadable)", dir.join(CONFIG_FILE).display()));
            lookup.warnings.push(problem);
        }
    }
    lookup
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Sandbox {
        _temp: tempfile::TempDir,
        home: PathBuf,
        config: PathBuf,
    }

    fn sandbox() -> Sandbox {
        let temp = tempfile::tempdir().unwrap();
        let home = temp.path().join("home");
        let config = temp.path().join("config");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&config).unwrap();
        Sandbox {
            _temp: temp,
            home,
            config,
        }
    }

    fn env(sandbox: &Sandbox, extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![
            ("HOME", sandbox.home.to_str().unwrap()),
            ("KAGGLE_CONFIG_DIR", sandbox.config.to_str().unwrap()),
        ];
        pairs.extend_from_slice(extra);
        Env::of(&pairs)
    }

    #[test]
    fn order_token_then_token_file_then_variables_then_file() {
        let sandbox = sandbox();
        fs::write(
            sandbox.config.join("kaggle.json"),
            r#"{"username":"filer","key":"filekey0123"}"#,
        )
        .unwrap();
        let all = env(
            &sandbox,
            &[
                ("KAGGLE_API_TOKEN", "KGAT_fromvariable"),
                ("KAGGLE_USERNAME", "envuser"),
                ("KAGGLE_KEY", "envkey0123"),
            ],
        );
        fs::write(sandbox.config.join("access_token"), "KGAT_fromfile\n").unwrap();
        let found = lookup(&all);
        let first = found.found.as_ref().unwrap();
        assert_eq!(first.source, Source::TokenVariable);
        assert_eq!(first.auth, Auth::Bearer(Secret::new("KGAT_fromvariable")));
        assert_eq!(found.shadowed.len(), 3, "{:?}", found.shadowed);

        let no_variable = env(
            &sandbox,
            &[("KAGGLE_USERNAME", "envuser"), ("KAGGLE_KEY", "envkey0123")],
        );
        let found = lookup(&no_variable).found.unwrap();
        assert_eq!(
            found.source,
            Source::TokenFile(sandbox.config.join("access_token"))
        );
        assert_eq!(found.auth, Auth::Bearer(Secret::new("KGAT_fromfile")));

        fs::remove_file(sandbox.config.join("access_token")).unwrap();
        let found = lookup(&no_variable).found.unwrap();
        assert_eq!(found.source, Source::KeyVariables);
        assert_eq!(found.username.as_deref(), Some("envuser"));
        assert_eq!(found.auth.header(), "Basic ZW52dXNlcjplbnZrZXkwMTIz");

        let found = lookup(&env(&sandbox, &[])).found.unwrap();
        assert_eq!(
            found.source,
            Source::ConfigFile(sandbox.config.join("kaggle.json"))
        );
        assert_eq!(found.username.as_deref(), Some("filer"));
    }

    #[test]
    fn token_variable_may_name_a_file_and_kgat_keys_go_as_bearer() {
        let sandbox = sandbox();
        let file = sandbox.home.join("tok");
        fs::write(&file, "  KGAT_infile  \n").unwrap();
        let found = lookup(&env(
            &sandbox,
            &[("KAGGLE_API_TOKEN", file.to_str().unwrap())],
        ));
        let found = found.found.unwrap();
        assert_eq!(found.source, Source::TokenVariableFile(file));
        assert_eq!(found.auth.header(), "Bearer KGAT_infile");

        let found = lookup(&env(&sandbox, &[("KAGGLE_KEY", "KGAT_pasted")]))
            .found
            .unwrap();
        assert_eq!(found.auth, Auth::Bearer(Secret::new("KGAT_pasted")));
    }

    #[test]
    fn nothing_found_lists_what_was_tried_and_warns_on_open_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let sandbox = sandbox();
        let found = lookup(&env(&sandbox, &[("KAGGLE_KEY", "lonelykey")]));
        assert!(found.found.is_none());
        let tried = found.tried.join("\n");
        assert!(tried.contains("KAGGLE_API_TOKEN (not set)"), "{tried}");
        assert!(tried.contains("KAGGLE_USERNAME is not"), "{tried}");
        assert!(tried.contains("kaggle.json (no such file)"), "{tried}");
        assert!(!tried.contains("lonelykey"));

        let path = sandbox.config.join("kaggle.json");
        fs::write(&path, r#"{"username":"u","key":"k0123456"}"#).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let found = lookup(&env(&sandbox, &[]));
        assert!(found.found.is_some());
        assert!(found.warnings[0].contains("chmod 600"));
    }

    #[test]
    fn secrets_never_show_in_debug_or_scrubbed_text() {
        let auth = Auth::Basic {
            username: "alice".into(),
            key: Secret::new("supersecretkey123"),
        };
        let credentials = Credentials {
            auth: auth.clone(),
            username: Some("alice".into()),
            source: Source::KeyVariables,
        };
        let debug = format!("{credentials:?} {auth:?}");
        assert!(!debug.contains("supersecretkey123"), "{debug}");
        let header = auth.header();
        let echoed = format!("server said: bad key supersecretkey123 in {header}");
        let secrets = vec!["supersecretkey123".to_owned()];
        let clean = crate::scrub::scrub(&echoed, &secrets);
        assert!(!clean.contains("supersecretkey123"), "{clean}");
        let pair_secret = vec!["alice:supersecretkey123".to_owned()];
        let clean = crate::scrub::scrub(&header, &pair_secret);
        assert!(!clean.contains(&header[6..]), "{clean}");
    }
}
