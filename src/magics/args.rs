//! Argument parsing shared by the magics: shell-word splitting (`shlex`), `~`
//! and `$VAR` expansion (`shellexpand`), and clap for flags.

use super::ErrorInfo;
use clap::Parser;

/// Splits magic arguments like a POSIX shell would.
pub fn words(name: &str, args: &str) -> Result<Vec<String>, ErrorInfo> {
    shlex::split(args)
        .ok_or_else(|| ErrorInfo::usage(format!("%{name}: unbalanced quotes in `{args}`")))
}

/// Parses flags with clap; `--help` and errors become readable usage errors.
pub fn parse<T: Parser>(name: &str, args: &str) -> Result<T, ErrorInfo> {
    let words = words(name, args)?;
    T::try_parse_from(std::iter::once(format!("%{name}")).chain(words)).map_err(|error| {
        let text = error.render().to_string();
        let text = text.trim().trim_start_matches("error: ").to_owned();
        ErrorInfo::usage(text)
    })
}

/// Expands `~` and environment variables in a path argument.
pub fn expand_path(text: &str) -> Result<String, ErrorInfo> {
    shellexpand::full(text)
        .map(|expanded| expanded.into_owned())
        .map_err(|error| ErrorInfo::usage(format!("cannot expand `{text}`: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quotes_and_reports_unbalanced() {
        assert_eq!(
            words("cd", r#""my dir" x\ y"#).unwrap(),
            vec!["my dir", "x y"]
        );
        assert!(
            words("cd", "\"open")
                .unwrap_err()
                .evalue
                .contains("unbalanced quotes")
        );
    }

    #[test]
    fn expands_home_and_variables() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(expand_path("~/data").unwrap(), format!("{home}/data"));
        assert_eq!(expand_path("$HOME/x").unwrap(), format!("{home}/x"));
        assert!(expand_path("$FERROLAB_SURELY_UNSET_VARIABLE/x").is_err());
    }

    #[derive(Parser, Debug)]
    struct Demo {
        #[arg(short = 'a')]
        append: bool,
        path: String,
    }

    #[test]
    fn clap_errors_are_usage_errors() {
        let demo: Demo = parse("demo", "-a file.txt").unwrap();
        assert!(demo.append && demo.path == "file.txt");
        let error = parse::<Demo>("demo", "-z").unwrap_err();
        assert_eq!(error.ename, "UsageError");
        assert!(error.evalue.contains("-z"), "{}", error.evalue);
    }
}
