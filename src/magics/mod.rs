//! Magics: `%line` and `%%cell` commands beside the Rust code, one module per
//! family, one registry that drives dispatch, `%lsmagic`, `%magic` and `%name?`
//! help.
//!
//! A magic gets its argument text (and a cell magic its body), the running
//! cell's [`CellContext`], the [`Engine`] and the router's [`MagicState`]. It
//! never touches sockets. Failures are [`ErrorInfo`]s that the router turns
//! into the cell's single `error` output.

mod args;
pub mod build_cache;
pub mod checkpoint;
mod dirs;
mod env;
mod files;
pub mod gpu;
pub mod hooks;
mod inspect;
mod kaggle;
pub mod shell;
mod state;
mod timing;

pub use state::MagicState;

use crate::engine::Engine;
use crate::kernel::CellContext;
use crate::protocol::content::MimeBundle;

/// Line (`%name`) or cell (`%%name`) magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Line,
    Cell,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Line => "%",
            Kind::Cell => "%%",
        }
    }
}

/// Everything a magic may use.
pub struct Call<'a> {
    pub name: &'a str,
    pub args: &'a str,
    /// The cell body (cell magics only).
    pub body: &'a str,
    pub cell: &'a CellContext,
    pub engine: &'a Engine,
    pub state: &'a mut MagicState,
    pub registry: &'a Registry,
}

/// A failed magic is the protocol's error triple: it becomes the cell's
/// `error` output as it is (see `ErrorInfo::new` and `ErrorInfo::usage`).
pub use crate::protocol::content::ErrorInfo;

/// What a magic returns: an optional value (shown as the cell's result).
pub type MagicResult = Result<Option<MimeBundle>, ErrorInfo>;

pub struct Magic {
    pub name: &'static str,
    pub kind: Kind,
    pub summary: &'static str,
    /// Full help: usage, description, examples.
    pub help: &'static str,
    pub run: fn(&mut Call) -> MagicResult,
}

pub struct Registry {
    magics: Vec<Magic>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::standard()
    }
}

impl Registry {
    /// Every magic ferrolab has.
    pub fn standard() -> Registry {
        let mut magics = Vec::new();
        magics.extend(dirs::magics());
        magics.extend(shell::magics());
        magics.extend(env::magics());
        magics.extend(files::magics());
        magics.extend(gpu::magics());
        magics.extend(timing::magics());
        magics.extend(inspect::magics());
        magics.extend(checkpoint::magics());
        magics.extend(build_cache::magics());
        magics.extend(kaggle::magics());
        magics.sort_by_key(|magic| (magic.kind == Kind::Cell, magic.name));
        Registry { magics }
    }

    pub fn all(&self) -> &[Magic] {
        &self.magics
    }

    pub fn find(&self, kind: Kind, name: &str) -> Option<&Magic> {
        self.magics
            .iter()
            .find(|magic| magic.kind == kind && magic.name == name)
    }

    /// The error for an unknown magic, naming the closest ones.
    pub fn unknown(&self, kind: Kind, name: &str) -> ErrorInfo {
        let mut message = format!(
            "{} magic `{}{name}` not found.",
            kind_label(kind),
            kind.prefix()
        );
        let other = match kind {
            Kind::Line => Kind::Cell,
            Kind::Cell => Kind::Line,
        };
        if self.find(other, name).is_some() {
            message.push_str(&format!(
                " Did you mean the {} magic `{}{name}`?",
                kind_label(other).to_lowercase(),
                other.prefix()
            ));
        } else {
            let mut close: Vec<(f64, String)> = self
                .magics
                .iter()
                .map(|magic| {
                    let score = strsim::jaro_winkler(name, magic.name);
                    (score, format!("{}{}", magic.kind.prefix(), magic.name))
                })
                .filter(|(score, _)| *score >= 0.75)
                .collect();
            close.sort_by(|a, b| b.0.total_cmp(&a.0));
            if !close.is_empty() {
                let names: Vec<String> = close.into_iter().take(3).map(|(_, name)| name).collect();
                message.push_str(&format!(" Close matches: {}.", names.join(", ")));
            }
            message.push_str(" See %lsmagic for the full list.");
        }
        ErrorInfo::usage(message)
    }

    /// Help for `%name` / `%%name` (as typed in a help query).
    pub fn help(&self, target: &str) -> Option<String> {
        let (kind, name) = if let Some(name) = target.strip_prefix("%%") {
            (Kind::Cell, name)
        } else if let Some(name) = target.strip_prefix('%') {
            (Kind::Line, name)
        } else {
            return None;
        };
        let magic = self.find(kind, name).or_else(|| {
            // `%time?` also finds `%%time` and the other way round.
            self.magics.iter().find(|magic| magic.name == name)
        })?;
        Some(format!(
            "{}{} — {}\n\n{}",
            magic.kind.prefix(),
            magic.name,
            magic.summary,
            magic.help.trim()
        ))
    }

    /// Names for completion after `%` or `%%`.
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.magics
            .iter()
            .map(|magic| format!("{}{}", magic.kind.prefix(), magic.name))
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Line => "Line",
        Kind::Cell => "Cell",
    }
}

/// A plain-text result bundle.
pub fn text_result(text: impl Into<String>) -> Option<MimeBundle> {
    let mut bundle = MimeBundle::new();
    bundle.insert("text/plain".into(), serde_json::Value::String(text.into()));
    Some(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_finds_and_suggests() {
        let registry = Registry::standard();
        assert!(registry.find(Kind::Line, "cd").is_some());
        assert!(registry.find(Kind::Cell, "bash").is_some());
        assert!(registry.find(Kind::Line, "bash").is_none());
        let error = registry.unknown(Kind::Line, "cdd");
        assert_eq!(error.ename, "UsageError");
        assert!(error.evalue.contains("%cd"), "{}", error.evalue);
        let wrong_kind = registry.unknown(Kind::Line, "bash");
        assert!(
            wrong_kind.evalue.contains("cell magic `%%bash`"),
            "{}",
            wrong_kind.evalue
        );
    }

    #[test]
    fn every_magic_has_help_and_unique_name() {
        let registry = Registry::standard();
        let mut seen = std::collections::HashSet::new();
        for magic in registry.all() {
            assert!(
                seen.insert((magic.kind, magic.name)),
                "duplicate {}",
                magic.name
            );
            assert!(
                !magic.summary.is_empty() && !magic.help.trim().is_empty(),
                "{}",
                magic.name
            );
            let target = format!("{}{}", magic.kind.prefix(), magic.name);
            assert!(registry.help(&target).is_some(), "{target}");
        }
        assert!(registry.help("%cd").unwrap().contains("%cd -b"));
        assert!(registry.help("%nope").is_none());
        assert!(registry.help("Vec").is_none());
    }
}
