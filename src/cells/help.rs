//! IPython-style help queries: `?name`, `??name`, `name?`, `name??`.
//!
//! Only a whole cell that is a single path (`Vec`, `std::fs::read_to_string`,
//! `%cd`) counts. `res?;` or a `?` inside an expression is Rust's question-mark
//! operator and is left alone; to apply `?` to a lone variable as a whole cell,
//! write `res?;`.

/// What a help query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpQuery {
    pub target: String,
    /// `??` asks for more detail.
    pub detailed: bool,
}

pub fn parse(cell: &str) -> Option<HelpQuery> {
    let text = cell.trim();
    if text.contains('\n') {
        return None;
    }
    let (target, marks) = if let Some(rest) = text.strip_prefix("??") {
        (rest, 2)
    } else if let Some(rest) = text.strip_prefix('?') {
        (rest, 1)
    } else if let Some(rest) = text.strip_suffix("??") {
        (rest, 2)
    } else if let Some(rest) = text.strip_suffix('?') {
        (rest, 1)
    } else {
        return None;
    };
    let target = target.trim();
    is_help_target(target).then(|| HelpQuery {
        target: target.to_owned(),
        detailed: marks == 2,
    })
}

/// A Rust path (`a::b::C`, optionally a macro `name!`) or a magic (`%cd`, `%%bash`).
fn is_help_target(target: &str) -> bool {
    let body = target
        .strip_prefix("%%")
        .or_else(|| target.strip_prefix('%'))
        .unwrap_or(target);
    let body = body.strip_suffix('!').unwrap_or(body);
    !body.is_empty()
        && body.split("::").all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|first| first.is_alphabetic() || first == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(target: &str, detailed: bool) -> Option<HelpQuery> {
        Some(HelpQuery {
            target: target.to_owned(),
            detailed,
        })
    }

    #[test]
    fn recognises_help_forms() {
        assert_eq!(parse("Vec?"), query("Vec", false));
        assert_eq!(
            parse("  std::fs::read_to_string?? "),
            query("std::fs::read_to_string", true)
        );
        assert_eq!(parse("?HashMap"), query("HashMap", false));
        assert_eq!(parse("%cd?"), query("%cd", false));
        assert_eq!(parse("?%%bash"), query("%%bash", false));
        assert_eq!(parse("println!?"), query("println!", false));
    }

    #[test]
    fn leaves_rust_question_marks_alone() {
        assert_eq!(parse("res?;"), None);
        assert_eq!(parse("f()?"), None);
        assert_eq!(parse("let x = y?"), None);
        assert_eq!(parse("a?\nb?"), None);
        assert_eq!(parse("?"), None);
        assert_eq!(parse("1?"), None);
    }
}
