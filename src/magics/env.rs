//! `%env` and `%set_env`: the environment of shell commands and Rust code.
//!
//! Changes apply to every later `!` command and, through the relay, to the
//! running Rust code (`std::env::var`) and to runtimes started later. The
//! kernel's own environment is not modified (that is unsound in a process with
//! threads). Values of secret-looking names (see
//! [`ferrolab_secrets`]: KEY, TOKEN, SECRET, PASSWORD, PWD, PASS,
//! CREDENTIAL, AUTH, PAT, PRIVATE, …) are shown as `<hidden>` everywhere —
//! listings and confirmations alike — and URL passwords as
//! `scheme://user:<hidden>@host`.

use super::args::words;
use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::kernel::StreamName;

pub fn magics() -> Vec<Magic> {
    vec![
        Magic {
            name: "env",
            kind: Kind::Line,
            summary: "list, get or set environment variables",
            help: "%env                 list all variables (secret-looking values hidden)\n%env NAME            one variable's value\n%env NAME=VALUE      set it (also: %env NAME VALUE)\n\nShell commands and the Rust code see the change. Values of secret-looking\nnames (KEY, TOKEN, SECRET, PASSWORD, PWD, PASS, CREDENTIAL, AUTH, PAT,\nPRIVATE, ...) are shown as <hidden>, and so are passwords in URLs\n(scheme://user:<hidden>@host). History stores them hidden too.\n\nExample:\n    %env CUDA_VISIBLE_DEVICES=0\n    !echo $CUDA_VISIBLE_DEVICES\n    std::env::var(\"CUDA_VISIBLE_DEVICES\")",
            run: env,
        },
        Magic {
            name: "set_env",
            kind: Kind::Line,
            summary: "set an environment variable",
            help: "%set_env NAME VALUE\n\nSame as `%env NAME=VALUE`.",
            run: set_env,
        },
    ]
}

fn shown(name: &str, value: &str) -> String {
    ferrolab_secrets::shown_value(name, value)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0']) && !name.chars().any(char::is_whitespace)
}

fn env(call: &mut Call) -> MagicResult {
    let args = call.args.trim();
    if args.is_empty() {
        let listing: String = call
            .state
            .environment()
            .iter()
            .map(|(name, value)| format!("{name}={}\n", shown(name, value)))
            .collect();
        return Ok(text_result(listing.trim_end().to_owned()));
    }
    if let Some((name, value)) = args.split_once('=') {
        return set(call, name.trim(), value.trim());
    }
    match name_and_value(args) {
        (name, None) => match call.state.env_var(name) {
            Some(value) => Ok(text_result(format!("{:?}", shown(name, &value)))),
            None => Err(ErrorInfo::usage(format!(
                "Environment does not have key: {name}"
            ))),
        },
        (name, Some(value)) => set(call, name, &value),
    }
}

fn set_env(call: &mut Call) -> MagicResult {
    match name_and_value(call.args.trim()) {
        (name, Some(value)) if !name.is_empty() => set(call, name, &value),
        _ => Err(ErrorInfo::usage("usage: %set_env NAME VALUE")),
    }
}

/// `NAME VALUE...`: the value is the rest of the line (quotes removed when
/// it is one quoted word), as in IPython.
fn name_and_value(args: &str) -> (&str, Option<String>) {
    match args.split_once(char::is_whitespace) {
        None => (args, None),
        Some((name, rest)) => {
            let rest = rest.trim();
            let unquoted = words("env", rest)
                .ok()
                .filter(|words| words.len() == 1)
                .and_then(|mut words| words.pop());
            (name, Some(unquoted.unwrap_or_else(|| rest.to_owned())))
        }
    }
}

fn set(call: &mut Call, name: &str, value: &str) -> MagicResult {
    if !valid_name(name) {
        return Err(ErrorInfo::usage(format!(
            "`{name}` is not a valid variable name (no spaces, `=` or NUL)"
        )));
    }
    if value.contains('\0') {
        return Err(ErrorInfo::usage("a variable's value cannot contain NUL"));
    }
    call.engine.set_env(name, Some(value)).map_err(|error| {
        ErrorInfo::new(
            "OSError",
            format!("%env: the Rust runtime could not set {name}: {error}"),
        )
    })?;
    call.state
        .env
        .insert(name.to_owned(), Some(value.to_owned()));
    call.cell.stream(
        StreamName::Stdout,
        &format!("env: {name}={}\n", shown(name, value)),
    );
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_hide_secret_names_and_url_passwords() {
        assert_eq!(shown("KAGGLE_KEY", "abc"), "<hidden>");
        assert_eq!(shown("MYSQL_PWD", "abc"), "<hidden>");
        assert_eq!(shown("EPOCHS", "3"), "3");
        assert_eq!(
            shown("HTTPS_PROXY", "http://u:pw@proxy:3128"),
            "http://u:<hidden>@proxy:3128"
        );
    }

    #[test]
    fn value_is_the_rest_of_the_line() {
        assert_eq!(
            name_and_value("A two words"),
            ("A", Some("two words".to_owned()))
        );
        assert_eq!(
            name_and_value("A \"quoted value\""),
            ("A", Some("quoted value".to_owned()))
        );
        assert_eq!(name_and_value("A"), ("A", None));
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("FOO_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("A B"));
        assert!(!valid_name("A=B"));
    }
}
