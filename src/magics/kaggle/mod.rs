//! `%kaggle`: the Kaggle workflow in the notebook — credentials, competition
//! and dataset downloads (resumable, checked, with `--unzip`), submissions
//! with scores, the leaderboard — with the official CLI's commands. The
//! client itself is the `ferrolab-kaggle` crate (`crates/kaggle`); this
//! magic is its adapter: [`args`] parses the command line, [`competitions`],
//! [`datasets`] and [`account`] run the commands, [`progress`] draws the
//! download bar in the cell.
//!
//! Each command runs with a [`Ctx`]: the environment (with `%env` changes),
//! the cwd, the cell, the credentials lookup. Invariant: every text that
//! leaves (streams, results, the error) is passed through [`scrub::scrub`],
//! so a key or token never shows even if a server echoes it; nothing here
//! logs one.

mod account;
mod args;
mod competitions;
mod datasets;
mod progress;

use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::kernel::{CellContext, StreamName};
use crate::protocol::content::MimeBundle;
use ferrolab_kaggle::client::{Api, Cancel};
use ferrolab_kaggle::download::{self, Fetch, Fetched, Naming};
use ferrolab_kaggle::errors::{self, AuthContext, KaggleError, Target};
use ferrolab_kaggle::{Env, Silent, config, credentials, refs, scrub, tables, transfer, unzip};
use progress::CellProgress;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

pub fn magics() -> Vec<Magic> {
    vec![Magic {
        name: "kaggle",
        kind: Kind::Line,
        summary: "Kaggle: login, download competition/dataset data, submit, leaderboard",
        help: HELP,
        run: kaggle,
    }]
}

const HELP: &str = "\
%kaggle login [--username U --key K | --token KGAT_...]
%kaggle whoami
%kaggle competitions list [-s TEXT] [--page N]
%kaggle competitions files -c COMP
%kaggle competitions download -c COMP [-f FILE] [-p PATH] [--unzip] [--force] [--quiet]
%kaggle competitions submit -c COMP -f FILE -m MESSAGE [--wait [SECONDS]] [--poll-interval S]
%kaggle competitions submissions -c COMP
%kaggle competitions leaderboard -c COMP (--show | --download) [-p PATH]
%kaggle datasets list [-s TEXT] [--user U | --mine] [--page N]
%kaggle datasets files -d OWNER/SLUG[/VERSION]
%kaggle datasets download -d OWNER/SLUG[/VERSION] [-f FILE] [-p PATH] [--unzip] [--force] [--quiet]
%kaggle config view | set -n (path|competition|proxy) -v VALUE | unset -n NAME
%kaggle COMMAND --help

The official `kaggle` CLI's commands and flags, natively (no Python). `c` and `d`
abbreviate competitions and datasets; COMP may be the competition's URL; `-c` may
be left out after `%kaggle config set -n competition -v COMP`.

Login: `%kaggle login` asks for your username and API key (hidden) and saves
kaggle.json with mode 0600. Credentials are looked for in the official order:
KAGGLE_API_TOKEN (a token or a file holding one), an access_token file,
KAGGLE_USERNAME + KAGGLE_KEY, then kaggle.json in KAGGLE_CONFIG_DIR, else
~/.kaggle, else $XDG_CONFIG_HOME/kaggle. `%env` changes apply. `%kaggle whoami`
says which one is used.

Downloads show a live progress bar, go to NAME.part and are renamed when
complete and checked (size, x-goog-hash); an interrupted or failed download
resumes where it stopped when run again. Up-to-date files are skipped unless
--force. --unzip checks every entry first (no absolute or `..` names, no links,
never through a link or over a folder of yours, size and expansion ratio within
FERROLAB_UNZIP_MAX_BYTES / FERROLAB_UNZIP_MAX_RATIO, default 100x), extracts
all or nothing (CRC checked) and deletes the zip only after a clean
extraction; a damaged zip is downloaded again on the next run.

Environment: KAGGLE_API_ENDPOINT (another API server, e.g. http://127.0.0.1:8080),
KAGGLE_API_ENVIRONMENT, KAGGLE_CONFIG_DIR, KAGGLE_PATH, KAGGLE_COMPETITION,
KAGGLE_PROXY (or HTTPS_PROXY).

Examples:
    %kaggle login
    %kaggle competitions download -c titanic -p data --unzip
    %kaggle competitions submit -c titanic -f submission.csv -m \"resnet v2\" --wait
    %kaggle competitions leaderboard titanic --show";

/// What one `%kaggle` command runs with.
pub(crate) struct Ctx<'a> {
    pub cell: &'a CellContext,
    pub env: Env,
    pub cwd: PathBuf,
    pub auth: AuthContext,
    secrets: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(cell: &'a CellContext, env: Env) -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Ctx {
            cell,
            env,
            cwd,
            auth: AuthContext::default(),
            secrets: Vec::new(),
        }
    }

    /// A line (or lines) on stdout.
    pub fn say(&self, text: &str) {
        let mut text = scrub::scrub(text, &self.secrets);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        self.cell.stream(StreamName::Stdout, &text);
    }

    /// A line on stderr (warnings).
    pub fn warn(&self, text: &str) {
        let mut text = scrub::scrub(text, &self.secrets);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        self.cell.stream(StreamName::Stderr, &text);
    }

    /// A secret typed in this command, to scrub from its output.
    pub fn add_secret(&mut self, secret: String) {
        self.secrets.push(secret);
    }

    pub fn cancel(&self) -> Cancel {
        let cell = self.cell.clone();
        Cancel::new(move || cell.is_cancelled())
    }

    /// Finds the credentials (printing their warnings) and builds a client.
    /// `anonymous`: a command that works without credentials.
    pub fn api(&mut self, anonymous: bool) -> Result<Api, KaggleError> {
        let lookup = credentials::lookup(&self.env);
        for warning in &lookup.warnings {
            self.warn(warning);
        }
        self.secrets.extend(lookup.secrets());
        self.auth = AuthContext {
            source: lookup
                .found
                .as_ref()
                .map(|credentials| credentials.source.to_string()),
            tried: lookup.tried.clone(),
            config_dir: config::config_dir(&self.env).display().to_string(),
        };
        let auth = match lookup.found {
            Some(credentials) => Some(credentials.auth),
            None if anonymous => None,
            None => {
                return Err(KaggleError::NoCredentials {
                    tried: lookup.tried,
                });
            }
        };
        Api::new(&self.env, auth, self.cancel())
    }

    pub fn explain(&self, error: KaggleError, target: &Target) -> ErrorInfo {
        let explained = errors::explain(error, target, &self.auth);
        ErrorInfo::new(explained.ename, explained.message)
    }

    /// A path typed by the user: `~` and `$VAR` expanded, relative to the cwd.
    pub fn resolve(&self, text: &str) -> Result<PathBuf, ErrorInfo> {
        let expanded = super::args::expand_path(text)?;
        let path = PathBuf::from(expanded);
        Ok(if path.is_absolute() {
            path
        } else {
            self.cwd.join(path)
        })
    }

    pub fn config(&self) -> Result<config::ConfigFile, ErrorInfo> {
        config::read_config(&config::config_dir(&self.env))
            .map_err(|problem| ErrorInfo::new("KaggleConfigError", problem))
    }

    /// The competition from the arguments, else the configured default.
    pub fn competition(&self, given: Option<&str>, quiet: bool) -> Result<String, ErrorInfo> {
        if let Some(given) = given {
            return refs::competition(given).map_err(ErrorInfo::usage);
        }
        let file = self.config()?;
        match config::setting(&self.env, &file, "competition") {
            Some((value, _)) => {
                let slug = refs::competition(&value).map_err(ErrorInfo::usage)?;
                if !quiet {
                    self.say(&format!("Using competition: {slug}"));
                }
                Ok(slug)
            }
            None => Err(ErrorInfo::usage(
                "No competition specified: add `-c NAME` (or the competition's URL), or set a default with `%kaggle config set -n competition -v NAME`",
            )),
        }
    }

    /// Where downloads go: `-p`, else `-w` (the cwd), else the configured
    /// `path` with `kind/...` under it, else the cwd.
    pub fn download_dir(
        &self,
        path: Option<&str>,
        wp: bool,
        under_config: &[&str],
    ) -> Result<PathBuf, ErrorInfo> {
        if let Some(path) = path {
            return self.resolve(path);
        }
        if wp {
            return Ok(self.cwd.clone());
        }
        let file = self.config()?;
        match config::setting(&self.env, &file, "path") {
            Some((root, _)) => {
                let mut dir = self.resolve(&root)?;
                for part in under_config {
                    dir.push(part);
                }
                Ok(dir)
            }
            None => Ok(self.cwd.clone()),
        }
    }

    fn scrub_bundle(&self, mut bundle: MimeBundle) -> MimeBundle {
        for (_, value) in bundle.iter_mut() {
            if let Value::String(text) = value {
                *text = scrub::scrub(text, &self.secrets);
            }
        }
        bundle
    }

    fn scrub_error(&self, error: ErrorInfo) -> ErrorInfo {
        ErrorInfo {
            ename: error.ename,
            evalue: scrub::scrub(&error.evalue, &self.secrets),
            traceback: error
                .traceback
                .iter()
                .map(|line| scrub::scrub(line, &self.secrets))
                .collect(),
        }
    }
}

/// The directory a `-f` file lands in: the folder part of its name under
/// `dir` (as the official CLI does), refused if it would leave `dir`.
pub fn file_dir(dir: &Path, file: &str) -> Result<PathBuf, ErrorInfo> {
    let path = Path::new(file);
    if !path
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return Err(ErrorInfo::usage(format!(
            "`{file}` is not a file name inside the competition or dataset"
        )));
    }
    Ok(match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => dir.join(parent),
        _ => dir.to_path_buf(),
    })
}

/// Downloads through the API, reports, and extracts with `--unzip`.
pub(crate) struct Get<'a> {
    pub locate: transfer::Locate<'a>,
    pub dir: PathBuf,
    pub naming: Naming,
    pub force: bool,
    pub quiet: bool,
    pub unzip: bool,
}

pub(crate) fn get(ctx: &Ctx, api: &Api, get: Get) -> Result<Option<PathBuf>, KaggleError> {
    let fetch = Fetch {
        api,
        locate: get.locate,
        dir: get.dir.clone(),
        naming: get.naming,
        force: get.force,
    };
    let fetched = if get.quiet {
        download::fetch(&fetch, &mut Silent)
    } else {
        download::fetch(&fetch, &mut CellProgress::new(ctx.cell.clone()))
    }?;
    let (path, remote) = match fetched {
        Fetched::UpToDate { path, why, remote } => {
            if !get.quiet {
                ctx.say(&format!(
                    "{}: up to date ({why}); skipped. Use --force to download it again.",
                    path.display()
                ));
            }
            if !path.exists() {
                return Ok(None);
            }
            (path, remote)
        }
        Fetched::Downloaded {
            path,
            remote,
            bytes,
        } => {
            if !get.quiet {
                ctx.say(&format!(
                    "Saved {} ({})",
                    path.display(),
                    tables::size(bytes)
                ));
            }
            (path, remote)
        }
    };
    let is_zip = path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("zip"));
    if !(get.unzip && is_zip) {
        if get.unzip && !get.quiet {
            ctx.say(&format!(
                "{} is not a zip archive; nothing to extract.",
                path.display()
            ));
        }
        return Ok(Some(path));
    }
    let dest = path.parent().unwrap_or(&get.dir).to_path_buf();
    let limits = unzip::Limits::from_env(&ctx.env)?;
    match unzip::extract(&path, &dest, limits, &ctx.cancel()) {
        Ok(extracted) => {
            std::fs::remove_file(&path).map_err(|error| {
                KaggleError::Io(format!(
                    "extracted, but cannot delete {}: {error}",
                    path.display()
                ))
            })?;
            download::write_stamp(&path, &remote);
            if !get.quiet {
                ctx.say(&format!(
                    "Extracted {} file{} ({}) into {} and deleted {}",
                    extracted.files,
                    if extracted.files == 1 { "" } else { "s" },
                    tables::size(extracted.bytes),
                    dest.display(),
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
            }
            Ok(Some(dest))
        }
        Err(unzip::UnzipError::Interrupted) => Err(KaggleError::Interrupted(
            unzip::UnzipError::Interrupted.describe(&path, &dest),
        )),
        Err(error) => {
            if error.archive_is_damaged() {
                download::mark_stale(&path);
            }
            Err(KaggleError::other(
                "KaggleUnzipError",
                error.describe(&path, &dest),
            ))
        }
    }
}

fn kaggle(call: &mut Call) -> MagicResult {
    let words = super::args::words("kaggle", call.args)?;
    if words.is_empty() {
        return Ok(text_result(HELP));
    }
    let cli = match args::parse(&words) {
        Ok(cli) => cli,
        Err(Ok(help)) => return Ok(text_result(help)),
        Err(Err(usage)) => return Err(ErrorInfo::usage(format!("%kaggle: {usage}"))),
    };
    let env = Env::new(call.state.environment());
    let mut ctx = Ctx::new(call.cell, env);
    let result = match cli.command {
        args::Command::Competitions(command) => competitions::run(&mut ctx, command),
        args::Command::Datasets(command) => datasets::run(&mut ctx, command),
        args::Command::Config(command) => account::config(&mut ctx, command),
        args::Command::Login(login) => account::login(&mut ctx, login),
        args::Command::Whoami => account::whoami(&mut ctx),
    };
    match result {
        Ok(bundle) => Ok(bundle.map(|bundle| ctx.scrub_bundle(bundle))),
        Err(error) => Err(ctx.scrub_error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_dirs_stay_inside() {
        let dir = Path::new("/data");
        assert_eq!(file_dir(dir, "train.csv").unwrap(), PathBuf::from("/data"));
        assert_eq!(
            file_dir(dir, "images/a.png").unwrap(),
            PathBuf::from("/data/images")
        );
        assert!(file_dir(dir, "../x.csv").is_err());
        assert!(file_dir(dir, "/etc/passwd").is_err());
    }

    #[test]
    fn help_names_every_command() {
        for command in [
            "login",
            "whoami",
            "competitions list",
            "competitions files",
            "competitions download",
            "competitions submit",
            "competitions submissions",
            "competitions leaderboard",
            "datasets list",
            "datasets files",
            "datasets download",
            "config view",
        ] {
            assert!(HELP.contains(command), "{command}");
        }
    }
}
