//! What counts as a secret, in one place: the `%env` listing, `%kaggle config
//! view`, the history the kernel stores and the Kaggle client's messages (a
//! proxy URL) all ask here. A crate of its own so that the kernel and the
//! Kaggle client (`crates/kaggle`, which needs no kernel) share one detector.
//!
//! A variable is secret when its name has one of [`SECRET_WORDS`] anywhere
//! in it, or one of [`SECRET_PARTS`] as a whole `_`-separated part (so `PAT`
//! hides `GITHUB_PAT` but not `PATH`). A value that is a URL with a password
//! (`scheme://user:pass@host`) shows without the password. History gets
//! [`redact_history`]: the values of secret variables set with `%env`,
//! `%set_env` or a shell assignment, of secret-looking `--flags` (`--key`,
//! `--token`, `--password`) in magics and shell commands, URL passwords and
//! Kaggle tokens (`KGAT_…`) become [`HIDDEN`]. The cell the user sees is
//! never changed.

use std::borrow::Cow;

/// What a hidden value shows as.
pub const HIDDEN: &str = "<hidden>";

/// Words that make a name secret wherever they appear in it.
pub const SECRET_WORDS: [&str; 9] = [
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "CREDENTIAL",
    "PRIVATE",
    "COOKIE",
];

/// Short words that make a name secret only as a whole part of it.
pub const SECRET_PARTS: [&str; 6] = ["PAT", "PWD", "PW", "AUTH", "CREDS", "APIKEY"];

/// Names that contain a secret part but are not secret (the shell's cwd).
const NOT_SECRET: [&str; 2] = ["PWD", "OLDPWD"];

/// True for names (of variables, settings or `--flags`) whose values must
/// not be shown.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.trim().trim_start_matches('-').to_ascii_uppercase();
    if NOT_SECRET.contains(&upper.as_str()) {
        return false;
    }
    SECRET_WORDS.iter().any(|word| upper.contains(word))
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|part| SECRET_PARTS.contains(&part))
}

/// A variable's value as it may be shown: [`HIDDEN`] for a secret name,
/// else the value with any URL password hidden.
pub fn shown_value(name: &str, value: &str) -> String {
    if is_secret_name(name) {
        HIDDEN.to_owned()
    } else {
        hide_url_passwords(value).into_owned()
    }
}

/// `scheme://user:pass@host` → `scheme://user:<hidden>@host`, for every URL
/// in `text`.
pub fn hide_url_passwords(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "/?#\"'<>`".contains(c))
            .map_or(text.len(), |at| start + at);
        let authority = &text[start..end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
            && colon + 1 < at
            && &authority[colon + 1..at] != HIDDEN
        {
            spans.push((start + colon + 1, start + at));
        }
        from = end.max(start);
    }
    replace_spans(text, &spans)
}

/// `KGAT_` followed by a token's characters, anywhere.
fn kaggle_token_spans(text: &str, spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(found) = text[from..].find("KGAT_") {
        let start = from + found;
        let tail = &text[start + 5..];
        let length = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        if length >= 16 {
            spans.push((start, start + 5 + length));
        }
        from = start + 5 + length;
    }
}

fn replace_spans<'a>(text: &'a str, spans: &[(usize, usize)]) -> Cow<'a, str> {
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut spans = spans.to_vec();
    spans.sort();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(HIDDEN);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// The words of a command line with their byte spans, split at whitespace
/// outside quotes (`'…'`, `"…"`, `\x`).
fn word_spans(line: &str) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quote = None;
    let mut escaped = false;
    for (at, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => {
                start.get_or_insert(at);
                escaped = true;
            }
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => {
                start.get_or_insert(at);
                quote = Some(c);
            }
            (None, c) if c.is_whitespace() => {
                if let Some(begin) = start.take() {
                    words.push((begin, at));
                }
            }
            (None, _) => {
                start.get_or_insert(at);
            }
        }
    }
    if let Some(begin) = start {
        words.push((begin, line.len()));
    }
    words
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// In a shell command or magic line: `SECRET=value`, `--secret=value` and
/// `--secret value` hide their values.
fn command_spans(line: &str, spans: &mut Vec<(usize, usize)>) {
    let words = word_spans(line);
    for (index, &(start, end)) in words.iter().enumerate() {
        // `!NAME=value cmd`: the `!` is not part of the name.
        let start = start + line[start..end].len() - line[start..end].trim_start_matches('!').len();
        let word = &line[start..end];
        if let Some(flag) = word.strip_prefix("--") {
            match flag.split_once('=') {
                Some((name, _)) if is_secret_name(name) => {
                    spans.push((start + 2 + name.len() + 1, end));
                }
                None if is_secret_name(flag) => {
                    if let Some(&next) = words.get(index + 1) {
                        spans.push(next);
                    }
                }
                _ => {}
            }
        } else if let Some((name, _)) = word.split_once('=')
            && is_variable_name(name)
            && is_secret_name(name)
        {
            spans.push((start + name.len() + 1, end));
        }
    }
}

/// `%env NAME=VALUE`, `%env NAME VALUE`, `%set_env NAME VALUE`: the value
/// of a secret name (`args` starts at byte `offset` of the line).
fn env_spans(line: &str, offset: usize, spans: &mut Vec<(usize, usize)>) {
    let args = &line[offset..];
    let content_end = offset + args.trim_end().len();
    let leading = args.len() - args.trim_start().len();
    let body = &line[offset + leading..content_end];
    let split = body
        .find(|c: char| c == '=' || c.is_whitespace())
        .map(|at| (at, &body[..at]));
    if let Some((at, name)) = split
        && is_secret_name(name)
    {
        let value = offset + leading + at + 1;
        if value < content_end {
            spans.push((value, content_end));
        }
    }
}

/// The text of a cell as the history should store it (see the module doc).
pub fn redact_history(cell: &str) -> String {
    let first = cell.trim_start().lines().next().unwrap_or_default();
    let script_body = ["%%bash", "%%sh", "%%script", "%%writefile"]
        .iter()
        .any(|magic| first.starts_with(magic));
    let mut out = String::with_capacity(cell.len());
    for (index, line) in cell.split_inclusive('\n').enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = &line[indent..];
        let mut spans = Vec::new();
        let env_args = ["%env", "%set_env"].iter().find_map(|magic| {
            trimmed
                .strip_prefix(magic)
                .filter(|rest| rest.starts_with(char::is_whitespace))
                .map(|rest| line.len() - rest.len())
        });
        if let Some(offset) = env_args {
            env_spans(line, offset, &mut spans);
        } else if trimmed.starts_with(['%', '!']) || (script_body && index > 0) {
            command_spans(line, &mut spans);
        }
        kaggle_token_spans(line, &mut spans);
        let redacted = replace_spans(line, &spans);
        out.push_str(&hide_url_passwords(&redacted));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_table() {
        let table: &[(&str, bool)] = &[
            ("KAGGLE_KEY", true),
            ("api_token", true),
            ("AWS_SECRET_ACCESS_KEY", true),
            ("DB_PASSWORD", true),
            ("PGPASSWORD", true),
            ("MYSQL_PWD", true),
            ("SMTP_PASS", true),
            ("REDIS_PASSWD", true),
            ("GOOGLE_APPLICATION_CREDENTIALS", true),
            ("NPM_AUTH", true),
            ("BASIC_AUTH_HEADER", true),
            ("GITHUB_PAT", true),
            ("gitlab-pat", true),
            ("SSH_PRIVATE_KEY_FILE", true),
            ("SESSION_COOKIE", true),
            ("DOCKER_CREDS", true),
            ("HF_TOKEN", true),
            ("--key", true),
            ("token", true),
            ("PATH", false),
            ("PWD", false),
            ("OLDPWD", false),
            ("HOME", false),
            ("CUDA_VISIBLE_DEVICES", false),
            ("GIT_AUTHOR_NAME", false),
            ("XAUTHORITY", false),
            ("PATCH_LEVEL", false),
            ("--username", false),
            ("EPOCHS", false),
        ];
        for &(name, secret) in table {
            assert_eq!(is_secret_name(name), secret, "{name}");
        }
    }

    #[test]
    fn shown_values_table() {
        let table: &[(&str, &str, &str)] = &[
            ("KAGGLE_KEY", "abc123", HIDDEN),
            ("EPOCHS", "3", "3"),
            (
                "HTTPS_PROXY",
                "http://alice:s3cret@proxy:3128",
                "http://alice:<hidden>@proxy:3128",
            ),
            (
                "DATABASE_URL",
                "postgres://u:p%40ss@db.local:5432/app?sslmode=require",
                "postgres://u:<hidden>@db.local:5432/app?sslmode=require",
            ),
            (
                "MIRRORS",
                "https://a:1@x/ https://b@y/ https://c:2@z",
                "https://a:<hidden>@x/ https://b@y/ https://c:<hidden>@z",
            ),
            ("PROXY", "http://proxy:3128", "http://proxy:3128"),
            ("NOTE", "mail me@host: no url", "mail me@host: no url"),
        ];
        for &(name, value, shown) in table {
            assert_eq!(shown_value(name, value), shown, "{name}={value}");
        }
    }

    #[test]
    fn history_redaction_table() {
        let table: &[(&str, &str)] = &[
            ("%env KAGGLE_KEY=abc123", "%env KAGGLE_KEY=<hidden>"),
            ("%env KAGGLE_KEY abc123", "%env KAGGLE_KEY <hidden>"),
            (
                "%env  KAGGLE_KEY = abc 123 \n",
                "%env  KAGGLE_KEY <hidden> \n",
            ),
            ("%set_env HF_TOKEN \"x y\"", "%set_env HF_TOKEN <hidden>"),
            ("%env EPOCHS=3", "%env EPOCHS=3"),
            ("%env KAGGLE_KEY", "%env KAGGLE_KEY"),
            (
                "%env HTTPS_PROXY=http://u:pw@proxy:3128",
                "%env HTTPS_PROXY=http://u:<hidden>@proxy:3128",
            ),
            (
                "%kaggle login --username alice --key abc123",
                "%kaggle login --username alice --key <hidden>",
            ),
            (
                "%kaggle login --key=abc123 --username alice",
                "%kaggle login --key=<hidden> --username alice",
            ),
            (
                "%kaggle login --token KGAT_0123456789abcdef0123456789abcdef",
                "%kaggle login --token <hidden>",
            ),
            (
                "%kaggle config set -n proxy -v http://me:pw@proxy:8080",
                "%kaggle config set -n proxy -v http://me:<hidden>@proxy:8080",
            ),
            (
                "!export KAGGLE_KEY='a b' && echo done",
                "!export KAGGLE_KEY=<hidden> && echo done",
            ),
            (
                "!HF_TOKEN=abc python train.py --epochs 3",
                "!HF_TOKEN=<hidden> python train.py --epochs 3",
            ),
            (
                "!huggingface-cli login --token hf_abcdef",
                "!huggingface-cli login --token <hidden>",
            ),
            (
                "%%bash\nexport DB_PASSWORD=hunter2\necho $DB_PASSWORD",
                "%%bash\nexport DB_PASSWORD=<hidden>\necho $DB_PASSWORD",
            ),
            (
                "let t = \"KGAT_0123456789abcdef0123456789abcdef\";",
                "let t = \"<hidden>\";",
            ),
            // Rust code keeps its text (only tokens and URL passwords go).
            ("let api_key=compute();", "let api_key=compute();"),
            (
                "let x = 1;\n%env A_KEY=v\nx",
                "let x = 1;\n%env A_KEY=<hidden>\nx",
            ),
        ];
        for &(cell, stored) in table {
            assert_eq!(redact_history(cell), stored, "{cell}");
        }
    }
}
