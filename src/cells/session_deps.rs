//! The crates a session has added with `:dep` lines that succeeded, so a warm
//! spare can have them built and loaded before the notebook's next kernel
//! (a restart, Restart & Run All) asks for them.
//!
//! Invariants: one line per crate, the newest spelling of it (a changed
//! version replaces the old line), in the order crates were first added;
//! local crates named by a relative path (`:dep ./lib`, `path = "../lib"`)
//! are left out (they resolve against a working directory of the moment); `:clear` empties
//! the list, as it empties evcxr's.

use crate::engine::evcxr_contract::{CLEAR_COMMAND, is_command_line};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionDeps {
    lines: Vec<(String, String)>,
}

impl SessionDeps {
    /// Takes in a Rust segment that succeeded; true when the list changed.
    pub fn record(&mut self, code: &str) -> bool {
        let before = self.clone();
        for line in code.lines() {
            if line.trim() == CLEAR_COMMAND {
                self.lines.clear();
            } else if let Some(name) = crate_of(line) {
                let line = line.trim().to_owned();
                match self.lines.iter_mut().find(|(known, _)| *known == name) {
                    Some(entry) => entry.1 = line,
                    None => self.lines.push((name, line)),
                }
            }
        }
        *self != before
    }

    /// Adds lines that were loaded another way (a spare's preload).
    pub fn extend(&mut self, lines: &[String]) {
        self.record(&lines.join("\n"));
    }

    pub fn clear(&mut self) {
        self.lines.clear();
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().map(|(_, line)| line.clone()).collect()
    }
}

/// The crate a `:dep` line adds, as evcxr reads the line (`:dep name = spec`,
/// `:dep name`, `:dep /absolute/path`); `None` for other lines and relative paths.
fn crate_of(line: &str) -> Option<String> {
    if !is_command_line(line) {
        return None;
    }
    let rest = line.trim_start_matches(' ').strip_prefix(":dep ")?.trim();
    if rest.is_empty() || rest.starts_with('.') || rest.starts_with('~') {
        return None;
    }
    if rest.starts_with('/') {
        return Some(rest.to_owned());
    }
    if names_a_relative_path(rest) {
        return None;
    }
    let name = rest.split(['=', ' ', '\t']).next()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether a `name = { path = "..." }` spec points at a relative path.
fn names_a_relative_path(spec: &str) -> bool {
    let Some(table) = spec.find('{').map(|open| &spec[open..]) else {
        return false;
    };
    let Some(at) = table.find("path") else {
        return false;
    };
    let after = table[at + "path".len()..].trim_start();
    let Some(value) = after.strip_prefix('=') else {
        return false;
    };
    let value = value.trim_start().trim_start_matches(['"', '\'']);
    !value.starts_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_crate_keeps_its_newest_line_in_first_added_order() {
        let mut deps = SessionDeps::default();
        assert!(deps.record(":dep regex = \"1\"\n:dep itoa\nlet a = 1;"));
        assert!(!deps.record("let b = 2;"));
        assert!(!deps.record(":dep itoa"));
        assert!(deps.record("  :dep regex = { version = \"1.10\" }"));
        assert_eq!(
            deps.lines(),
            [":dep regex = { version = \"1.10\" }", ":dep itoa"]
        );
    }

    #[test]
    fn relative_paths_other_commands_and_rust_are_not_crates() {
        let mut deps = SessionDeps::default();
        assert!(!deps.record(":dep ./mylib\n:dep ~/lib\n:opt 1\nlet dep = 1;\n\t:dep tabbed"));
        assert!(!deps.record(":dep mylib = { path = \"../mylib\" }"));
        assert!(deps.record(":dep theirs = { path = \"/opt/theirs\", features = [\"x\"] }"));
        assert!(deps.record(":dep pathfinder_geometry = \"0.5\""));
        assert!(deps.record(":dep path = \"1\""));
        assert!(deps.record(":dep /home/me/mylib"));
        assert_eq!(
            deps.lines(),
            [
                ":dep theirs = { path = \"/opt/theirs\", features = [\"x\"] }",
                ":dep pathfinder_geometry = \"0.5\"",
                ":dep path = \"1\"",
                ":dep /home/me/mylib"
            ]
        );
    }

    #[test]
    fn clear_forgets_every_crate() {
        let mut deps = SessionDeps::default();
        deps.record(":dep itoa");
        assert!(deps.record(":clear"));
        assert!(deps.lines().is_empty());
        deps.extend(&[":dep ryu = \"1\"".to_owned()]);
        assert_eq!(deps.lines(), [":dep ryu = \"1\""]);
    }
}
