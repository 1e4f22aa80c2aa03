//! `%kaggle login`, `%kaggle whoami` and `%kaggle config view|set|unset`.
//!
//! Login asks through the frontend (`input_request`, the key with
//! `password: true`) unless given as flags, and writes `kaggle.json` (or, for
//! `--token`, `access_token`) atomically with mode 0600, keeping the file's
//! other settings. Whoami checks the credentials with the server (a token is
//! introspected, which also says whose it is) and says where they came from.
//! None of these print a key or a token, nor a password in the proxy URL.

use super::Ctx;
use super::args::{Config, Login};
use crate::kernel::InputError;
use crate::magics::{ErrorInfo, MagicResult};
use ferrolab_kaggle::client::{COMPETITIONS, SECURITY};
use ferrolab_kaggle::config::{self, SETTINGS};
use ferrolab_kaggle::credentials::{self, Auth};
use ferrolab_kaggle::errors::{KaggleError, Target};
use ferrolab_kaggle::refs;
use ferrolab_secrets::shown_value;
use serde_json::{Value, json};

fn ask(ctx: &Ctx, prompt: &str, password: bool) -> Result<String, ErrorInfo> {
    if !ctx.cell.allows_input() {
        return Err(ErrorInfo::usage(
            "This frontend cannot ask for input: use `%kaggle login --username USER --key KEY` \
             (or `--token KGAT_...`), or `%env KAGGLE_API_TOKEN=KGAT_...`",
        ));
    }
    match ctx.cell.input(prompt, password) {
        Ok(answer) => Ok(answer.trim().to_owned()),
        Err(InputError::Interrupted) => Err(ErrorInfo::new(
            "Interrupted",
            "login cancelled; nothing was saved",
        )),
        Err(error) => Err(ErrorInfo::new(
            "KaggleError",
            format!("cannot ask for the credentials: {error}"),
        )),
    }
}

pub fn login(ctx: &mut Ctx, login: Login) -> MagicResult {
    let dir = config::config_dir(&ctx.env);
    if let Some(token) = login.token {
        let token = token.trim();
        if token.is_empty() {
            return Err(ErrorInfo::usage("--token needs the token's value"));
        }
        let path = dir.join("access_token");
        config::write_private(&path, format!("{token}\n").as_bytes())
            .map_err(|problem| ErrorInfo::new("KaggleIOError", problem))?;
        ctx.say(&format!(
            "Saved the access token to {} (mode 0600).",
            path.display()
        ));
        note_shadowing(ctx);
        return Ok(None);
    }
    let username = match login.username {
        Some(username) => username.trim().to_owned(),
        None => ask(ctx, "Kaggle username: ", false)?,
    };
    if username.is_empty() {
        return Err(ErrorInfo::usage("no username given; nothing was saved"));
    }
    let key = match login.key {
        Some(key) => key.trim().to_owned(),
        None => ask(
            ctx,
            "Kaggle API key (from kaggle.com/settings → API): ",
            true,
        )?,
    };
    if key.is_empty() {
        return Err(ErrorInfo::usage("no key given; nothing was saved"));
    }
    // Scrub it from anything printed from now on.
    ctx_secret(ctx, &username, &key);
    let mut file = config::read_config(&dir).unwrap_or_default();
    file.values
        .insert("username".into(), Value::String(username.clone()));
    file.values.insert("key".into(), Value::String(key));
    let path = config::write_config(&dir, &file.values)
        .map_err(|problem| ErrorInfo::new("KaggleIOError", problem))?;
    ctx.say(&format!(
        "Saved the Kaggle credentials of {username} to {} (mode 0600).",
        path.display()
    ));
    note_shadowing(ctx);
    Ok(None)
}

fn ctx_secret(ctx: &mut Ctx, username: &str, key: &str) {
    ctx.add_secret(key.to_owned());
    ctx.add_secret(format!("{username}:{key}"));
}

/// After a login: says if a higher-ranked source will still be used.
fn note_shadowing(ctx: &Ctx) {
    let lookup = credentials::lookup(&ctx.env);
    if let Some(found) = lookup.found
        && !matches!(
            found.source,
            credentials::Source::ConfigFile(_) | credentials::Source::TokenFile(_)
        )
    {
        ctx.warn(&format!(
            "Note: {} comes first in the search order, so it is still what %kaggle uses.",
            found.source
        ));
    }
}

pub fn whoami(ctx: &mut Ctx) -> MagicResult {
    let target = Target::none();
    let api = ctx
        .api(false)
        .map_err(|error| ctx.explain(error, &target))?;
    let lookup = credentials::lookup(&ctx.env);
    let Some(found) = lookup.found else {
        return Err(ctx.explain(
            KaggleError::NoCredentials {
                tried: lookup.tried,
            },
            &target,
        ));
    };
    let username = match &found.auth {
        Auth::Bearer(token) => {
            let answer = api
                .call(
                    SECURITY,
                    "IntrospectToken",
                    &json!({"token": token.expose()}),
                )
                .map_err(|error| ctx.explain(error, &target))?;
            if answer.get("active").and_then(Value::as_bool) != Some(true) {
                return Err(ErrorInfo::new(
                    "KaggleAuthError",
                    format!(
                        "The token from {} is not active (expired or revoked). Create a new one at https://www.kaggle.com/settings and run `%kaggle login --token ...`.",
                        found.source
                    ),
                ));
            }
            answer
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(found.username.clone())
        }
        Auth::Basic { username, .. } => {
            api.call(
                COMPETITIONS,
                "ListCompetitions",
                &json!({"group": "COMPETITION_LIST_TAB_EVERYTHING", "page": 1, "pageSize": 1, "pageToken": ""}),
            )
            .map_err(|error| ctx.explain(error, &target))?;
            Some(username.clone())
        }
    };
    let mut text = format!(
        "Kaggle user: {}\nCredentials: {}, sent as {}\nChecked with {}: accepted",
        username.as_deref().unwrap_or("(the server did not say)"),
        found.source,
        found.auth.scheme(),
        api.base()
    );
    if !lookup.shadowed.is_empty() {
        let others: Vec<String> = lookup.shadowed.iter().map(ToString::to_string).collect();
        text.push_str(&format!(
            "\nAlso found, not used (later in the order): {}",
            others.join("; ")
        ));
    }
    ctx.say(&text);
    Ok(None)
}

pub fn config(ctx: &mut Ctx, command: Config) -> MagicResult {
    let dir = config::config_dir(&ctx.env);
    let mut file = ctx.config()?;
    match command {
        Config::View => {
            let lookup = credentials::lookup(&ctx.env);
            for warning in &lookup.warnings {
                ctx.warn(warning);
            }
            let mut text = format!("Configuration values from {}", dir.display());
            let username = lookup
                .found
                .as_ref()
                .and_then(|found| found.username.clone())
                .or_else(|| file.string("username").map(str::to_owned));
            text.push_str(&format!(
                "\n- username: {}",
                username.as_deref().unwrap_or("None")
            ));
            let method = match &lookup.found {
                Some(found) => format!("{} from {}", found.auth.scheme(), found.source),
                None => "None".to_owned(),
            };
            text.push_str(&format!("\n- auth_method: {method}"));
            for name in SETTINGS {
                let value = match config::setting(&ctx.env, &file, name) {
                    Some((value, from)) if from.starts_with("KAGGLE_") => {
                        format!("{} (from {from})", shown_value(name, &value))
                    }
                    Some((value, _)) => shown_value(name, &value),
                    None => "None".to_owned(),
                };
                text.push_str(&format!("\n- {name}: {value}"));
            }
            ctx.say(&text);
        }
        Config::Set { name, value } => {
            let name = name.trim().to_ascii_lowercase();
            let value = match name.as_str() {
                "competition" => refs::competition(&value).map_err(ErrorInfo::usage)?,
                "path" => ctx.resolve(&value)?.display().to_string(),
                "proxy" => value.trim().to_owned(),
                "username" | "key" => {
                    return Err(ErrorInfo::usage(
                        "Credentials are set with `%kaggle login`, not `config set`",
                    ));
                }
                other => {
                    return Err(ErrorInfo::usage(format!(
                        "`{other}` is not a setting: use one of {}",
                        SETTINGS.join(", ")
                    )));
                }
            };
            file.values
                .insert(name.clone(), Value::String(value.clone()));
            config::write_config(&dir, &file.values)
                .map_err(|problem| ErrorInfo::new("KaggleIOError", problem))?;
            ctx.say(&format!(
                "- {name} is now set to: {}",
                shown_value(&name, &value)
            ));
        }
        Config::Unset { name } => {
            let name = name.trim().to_ascii_lowercase();
            if !SETTINGS.contains(&name.as_str()) {
                return Err(ErrorInfo::usage(format!(
                    "`{name}` is not a setting: use one of {}",
                    SETTINGS.join(", ")
                )));
            }
            if file.values.remove(&name).is_some() {
                config::write_config(&dir, &file.values)
                    .map_err(|problem| ErrorInfo::new("KaggleIOError", problem))?;
                ctx.say(&format!("- {name} is now unset"));
            } else {
                ctx.say(&format!("- {name} was not set"));
            }
        }
    }
    Ok(None)
}
