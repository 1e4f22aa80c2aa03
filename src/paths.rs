//! Where ferrolab keeps its files: the XDG base directories, resolved by one
//! rule for every part of the kernel (history, bookmarks, the kernelspec, the
//! checkpoint runtime and key, the remote-checkpoint cache, the build cache).
//!
//! The rule (the XDG Base Directory spec): `$XDG_<KIND>_HOME` when it is set
//! to an absolute path, else `$HOME/<default>`; a variable set to the empty
//! string counts as unset. Lookups go through a function, so a notebook's
//! environment (with `%env` changes) can be used instead of the process's.
//! `crates/buildcache` keeps its own copy of the cache rule (it needs no
//! kernel); a test below checks that the two agree.

use std::ffi::OsString;
use std::path::PathBuf;

/// One of the XDG base directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `$XDG_DATA_HOME`, else `~/.local/share`.
    Data,
    /// `$XDG_CACHE_HOME`, else `~/.cache`.
    Cache,
    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    Config,
}

impl Base {
    fn variable(self) -> &'static str {
        match self {
            Base::Data => "XDG_DATA_HOME",
            Base::Cache => "XDG_CACHE_HOME",
            Base::Config => "XDG_CONFIG_HOME",
        }
    }

    fn under_home(self) -> &'static str {
        match self {
            Base::Data => ".local/share",
            Base::Cache => ".cache",
            Base::Config => ".config",
        }
    }
}

/// The base directory from the variables `var` returns; `None` when neither
/// the XDG variable nor `HOME` gives one.
pub fn base_dir_from(base: Base, var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    set(base.variable())
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(base.under_home())))
}

/// The base directory from the process's environment.
pub fn base_dir(base: Base) -> Option<PathBuf> {
    base_dir_from(base, |name| std::env::var_os(name))
}

/// `<cache>/ferrolab`, or `<temp>/ferrolab` when there is no home at all.
pub fn ferrolab_cache_dir() -> PathBuf {
    base_dir(Base::Cache)
        .unwrap_or_else(std::env::temp_dir)
        .join("ferrolab")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn an_absolute_xdg_variable_wins_over_home() {
        let var = vars(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")]);
        assert_eq!(
            base_dir_from(Base::Cache, &var),
            Some(PathBuf::from("/x/cache"))
        );
        assert_eq!(
            base_dir_from(Base::Data, &var),
            Some(PathBuf::from("/home/u/.local/share"))
        );
        assert_eq!(
            base_dir_from(Base::Config, &var),
            Some(PathBuf::from("/home/u/.config"))
        );
    }

    #[test]
    fn relative_or_empty_values_are_ignored() {
        let var = vars(&[("XDG_DATA_HOME", "relative"), ("HOME", "/home/u")]);
        assert_eq!(
            base_dir_from(Base::Data, &var),
            Some(PathBuf::from("/home/u/.local/share"))
        );
        let var = vars(&[("XDG_CONFIG_HOME", ""), ("HOME", "")]);
        assert_eq!(base_dir_from(Base::Config, &var), None);
    }

    #[test]
    fn the_build_cache_crate_follows_the_same_rule() {
        for pairs in [
            &[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")][..],
            &[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/u")][..],
            &[("XDG_CACHE_HOME", ""), ("HOME", "/home/v")][..],
        ] {
            let var = vars(pairs);
            let settings = ferrolab_buildcache::Settings::from_vars(&var);
            let ours = base_dir_from(Base::Cache, &var).unwrap();
            assert_eq!(
                settings.dir,
                ours.join("ferrolab").join("build-cache"),
                "{pairs:?}"
            );
        }
    }
}
