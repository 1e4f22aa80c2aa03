//! The `%kaggle` command line, with the official CLI's commands and flags
//! (clap derive; words split like a shell). `competitions`/`datasets` have
//! the aliases `c`/`d`; the competition may be given as a positional or with
//! `-c`, the dataset as a positional or with `-d`, as in the CLI.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "%kaggle",
    about = "Kaggle from the notebook: credentials, data, submissions, leaderboard",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Competitions: list, files, download, submit, submissions, leaderboard
    #[command(visible_alias = "c", subcommand)]
    Competitions(Competitions),
    /// Datasets: list, files, download
    #[command(visible_alias = "d", subcommand)]
    Datasets(Datasets),
    /// Settings in kaggle.json: view, set, unset
    #[command(subcommand)]
    Config(Config),
    /// Save your Kaggle username and API key (or a token), mode 0600
    Login(Login),
    /// Who the credentials belong to, and where they came from
    Whoami,
}

/// `COMP` or `-c COMP` (either form; a URL works too).
#[derive(Args, Debug, Clone, Default)]
pub struct CompetitionArg {
    /// Competition name (or its URL); default: `%kaggle config set -n competition`
    #[arg(value_name = "COMPETITION")]
    pub positional: Option<String>,
    #[arg(
        short = 'c',
        long = "competition",
        value_name = "COMPETITION",
        hide = true
    )]
    pub flag: Option<String>,
}

impl CompetitionArg {
    pub fn given(&self) -> Option<&str> {
        self.flag.as_deref().or(self.positional.as_deref())
    }
}

#[derive(Subcommand, Debug)]
pub enum Competitions {
    /// List competitions
    List {
        /// Search terms
        #[arg(short = 's', long = "search")]
        search: Option<String>,
        /// Page number (from 1)
        #[arg(short = 'p', long = "page", default_value_t = 1)]
        page: u32,
    },
    /// List a competition's data files
    Files {
        #[command(flatten)]
        competition: CompetitionArg,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Download a competition's data (all files as one zip, or one file)
    Download {
        #[command(flatten)]
        competition: CompetitionArg,
        /// One file (default: all, as COMPETITION.zip)
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        /// Folder (default: the config's path, else the current folder)
        #[arg(short = 'p', long = "path")]
        path: Option<String>,
        /// Download to the current folder
        #[arg(short = 'w', long = "wp")]
        wp: bool,
        /// Extract the zip (checked, all or nothing) and delete it
        #[arg(long)]
        unzip: bool,
        /// Download even if the local copy is up to date
        #[arg(short = 'o', long)]
        force: bool,
        /// No progress bar or messages
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Submit a file (upload, then create the submission)
    Submit {
        #[command(flatten)]
        competition: CompetitionArg,
        /// The file to submit
        #[arg(short = 'f', long = "file", required = true)]
        file: String,
        /// Message (description) of the submission
        #[arg(short = 'm', long = "message", required = true)]
        message: String,
        /// Wait until it is scored and show the score; optional limit in seconds
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "0")]
        wait: Option<f64>,
        /// Seconds between checks while waiting
        #[arg(long = "poll-interval", value_name = "SECONDS", default_value_t = 5.0)]
        poll_interval: f64,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Your submissions, with scores (and errors of failed ones)
    Submissions {
        #[command(flatten)]
        competition: CompetitionArg,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// The leaderboard: show the top, or download it all as a zip
    Leaderboard {
        #[command(flatten)]
        competition: CompetitionArg,
        /// Show the top of the leaderboard
        #[arg(short = 's', long)]
        show: bool,
        /// Download the whole leaderboard (COMPETITION.zip)
        #[arg(short = 'd', long)]
        download: bool,
        /// Folder for --download
        #[arg(short = 'p', long = "path")]
        path: Option<String>,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

/// `OWNER/SLUG[/VERSION]` or `-d OWNER/SLUG[/VERSION]`.
#[derive(Args, Debug, Clone, Default)]
pub struct DatasetArg {
    /// Dataset OWNER/SLUG[/VERSION] (or its URL)
    #[arg(value_name = "DATASET")]
    pub positional: Option<String>,
    #[arg(short = 'd', long = "dataset", value_name = "DATASET", hide = true)]
    pub flag: Option<String>,
}

impl DatasetArg {
    pub fn given(&self) -> Option<&str> {
        self.flag.as_deref().or(self.positional.as_deref())
    }
}

#[derive(Subcommand, Debug)]
pub enum Datasets {
    /// List datasets
    List {
        #[arg(short = 's', long = "search")]
        search: Option<String>,
        /// Only this user's datasets
        #[arg(long)]
        user: Option<String>,
        /// Only your own datasets
        #[arg(short = 'm', long)]
        mine: bool,
        #[arg(short = 'p', long = "page", default_value_t = 1)]
        page: u32,
    },
    /// List a dataset's files
    Files {
        #[command(flatten)]
        dataset: DatasetArg,
    },
    /// Download a dataset (all files as SLUG.zip, or one file)
    Download {
        #[command(flatten)]
        dataset: DatasetArg,
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        #[arg(short = 'p', long = "path")]
        path: Option<String>,
        #[arg(short = 'w', long = "wp")]
        wp: bool,
        #[arg(long)]
        unzip: bool,
        #[arg(short = 'o', long)]
        force: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Config {
    /// Show the configuration and where it comes from
    View,
    /// Set `path` (default download folder), `competition` (default -c) or `proxy`
    Set {
        #[arg(short = 'n', long = "name", required = true)]
        name: String,
        #[arg(short = 'v', long = "value", required = true)]
        value: String,
    },
    /// Remove a setting
    Unset {
        #[arg(short = 'n', long = "name", required = true)]
        name: String,
    },
}

#[derive(Args, Debug, Default)]
pub struct Login {
    /// Your Kaggle username (asked if missing)
    #[arg(long)]
    pub username: Option<String>,
    /// Your API key (asked, hidden, if missing; typing it here keeps it in the notebook)
    #[arg(long)]
    pub key: Option<String>,
    /// An access token (KGAT_...) instead of a username and key: saved as `access_token`
    #[arg(long)]
    pub token: Option<String>,
}

/// Parses the words after `%kaggle`; `Err(Ok(text))` is help to show,
/// `Err(Err(text))` a usage error.
pub fn parse(words: &[String]) -> Result<Cli, Result<String, String>> {
    Cli::try_parse_from(std::iter::once("%kaggle".to_owned()).chain(words.iter().cloned())).map_err(
        |error| {
            use clap::error::ErrorKind;
            let text = error.render().to_string();
            match error.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Ok(text),
                _ => Err(text.trim().trim_start_matches("error: ").to_owned()),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        shlex::split(text).unwrap()
    }

    #[test]
    fn download_flags_as_the_official_cli() {
        let cli = parse(&words(
            "competitions download -c titanic -f train.csv -p data --unzip -o -q",
        ))
        .unwrap();
        match cli.command {
            Command::Competitions(Competitions::Download {
                competition,
                file,
                path,
                unzip,
                force,
                quiet,
                ..
            }) => {
                assert_eq!(competition.given(), Some("titanic"));
                assert_eq!(file.as_deref(), Some("train.csv"));
                assert_eq!(path.as_deref(), Some("data"));
                assert!(unzip && force && quiet);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&words("c download titanic")).unwrap();
        assert!(matches!(
            cli.command,
            Command::Competitions(Competitions::Download { competition, .. }) if competition.given() == Some("titanic")
        ));
    }

    #[test]
    fn submit_requires_file_and_message_and_wait_is_optional_valued() {
        let error = parse(&words("competitions submit -c t -f a.csv"))
            .unwrap_err()
            .unwrap_err();
        assert!(error.contains("--message"), "{error}");
        let cli = parse(&words(
            "competitions submit -c t -f a.csv -m 'v2 model' --wait",
        ))
        .unwrap();
        match cli.command {
            Command::Competitions(Competitions::Submit { message, wait, .. }) => {
                assert_eq!(message, "v2 model");
                assert_eq!(wait, Some(0.0));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&words(
            "c submit t -f a.csv -m m --wait 30 --poll-interval 0.5",
        ))
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Competitions(Competitions::Submit {
                wait: Some(30.0),
                ..
            })
        ));
    }

    #[test]
    fn help_is_text_and_datasets_take_a_reference() {
        let help = parse(&words("--help")).unwrap_err().unwrap();
        assert!(
            help.contains("competitions") && help.contains("datasets"),
            "{help}"
        );
        let help = parse(&words("competitions download --help"))
            .unwrap_err()
            .unwrap();
        assert!(help.contains("--unzip"), "{help}");
        let cli = parse(&words("d download -d owner/slug/2 --unzip")).unwrap();
        assert!(matches!(
            cli.command,
            Command::Datasets(Datasets::Download { dataset, unzip: true, .. }) if dataset.given() == Some("owner/slug/2")
        ));
        let cli = parse(&words("config set -n competition -v titanic")).unwrap();
        assert!(matches!(cli.command, Command::Config(Config::Set { .. })));
        assert!(
            parse(&words("competitions frobnicate"))
                .unwrap_err()
                .is_err()
        );
    }
}
