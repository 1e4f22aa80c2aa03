//! The environment the client reads (in the kernel: its own variables with
//! the notebook's `%env` changes applied), captured once per command so every
//! part of it sees the same values. Empty values count as unset.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    pub fn new(vars: BTreeMap<String, String>) -> Self {
        Env(vars)
    }

    /// An environment of exactly these variables.
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        Env(pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect())
    }

    /// The value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    pub fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }

    /// `$XDG_CONFIG_HOME` when absolute, else `~/.config`.
    pub fn xdg_config_home(&self) -> Option<PathBuf> {
        self.get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
            .or_else(|| self.home().map(|home| home.join(".config")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_unset_and_xdg_falls_back() {
        let env = Env::of(&[("A", ""), ("HOME", "/h"), ("XDG_CONFIG_HOME", "rel")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.xdg_config_home(), Some(PathBuf::from("/h/.config")));
        let env = Env::of(&[("XDG_CONFIG_HOME", "/x")]);
        assert_eq!(env.xdg_config_home(), Some(PathBuf::from("/x")));
    }
}
