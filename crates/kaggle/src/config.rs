//! Where the Kaggle configuration lives and how it is read and written, as the
//! official CLI does: `kaggle.json` in `$KAGGLE_CONFIG_DIR`, else `~/.kaggle`,
//! else `$XDG_CONFIG_HOME/kaggle`; settings (`path`, `competition`, `proxy`)
//! beside the credentials, each overridden by `KAGGLE_<NAME>` in the
//! environment.
//!
//! Invariants: files holding secrets are written atomically (a temporary file
//! in the same directory, renamed over) with mode 0600 from the start, so a
//! key is never readable by others, not even for a moment. Reading never
//! fails on a missing file; a file readable by others only gets the CLI's
//! warning, with the exact `chmod` to run.

use crate::env::Env;
use serde_json::{Map, Value};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "kaggle.json";
/// The settings `%kaggle config set` accepts.
pub const SETTINGS: [&str; 3] = ["path", "competition", "proxy"];

/// The directories searched for `kaggle.json`, in order, with how each was
/// chosen. With `KAGGLE_CONFIG_DIR` set it is the only one.
pub fn candidate_dirs(env: &Env) -> Vec<(PathBuf, &'static str)> {
    if let Some(dir) = env.get("KAGGLE_CONFIG_DIR") {
        return vec![(PathBuf::from(dir), "KAGGLE_CONFIG_DIR")];
    }
    let mut dirs = Vec::new();
    if let Some(home) = env.home() {
        dirs.push((home.join(".kaggle"), "~/.kaggle"));
    }
    if let Some(xdg) = env.xdg_config_home() {
        dirs.push((xdg.join("kaggle"), "$XDG_CONFIG_HOME/kaggle"));
    }
    dirs
}

/// The configuration directory: the first candidate holding `kaggle.json`,
/// else the first that exists, else the first (`~/.kaggle`, where
/// `%kaggle login` creates it: every version of the official CLI reads it).
pub fn config_dir(env: &Env) -> PathBuf {
    let candidates = candidate_dirs(env);
    candidates
        .iter()
        .find(|(dir, _)| dir.join(CONFIG_FILE).is_file())
        .or_else(|| candidates.iter().find(|(dir, _)| dir.is_dir()))
        .or(candidates.first())
        .map(|(dir, _)| dir.clone())
        .unwrap_or_else(|| PathBuf::from(".kaggle"))
}

/// A parsed `kaggle.json` (every key kept, so rewriting it loses nothing).
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub values: Map<String, Value>,
    pub exists: bool,
}

impl ConfigFile {
    pub fn string(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.trim().is_empty())
    }
}

/// Reads `<dir>/kaggle.json`. A missing file is an empty config; a file that
/// is not a JSON object is an error naming it.
pub fn read_config(dir: &Path) -> Result<ConfigFile, String> {
    let path = dir.join(CONFIG_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ConfigFile {
                path,
                ..ConfigFile::default()
            });
        }
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let values = if text.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(values)) => values,
            _ => {
                return Err(format!(
                    "{} is not a JSON object like {{\"username\": \"...\", \"key\": \"...\"}}: fix or delete it, then run %kaggle login",
                    path.display()
                ));
            }
        }
    };
    Ok(ConfigFile {
        path,
        values,
        exists: true,
    })
}

/// The official CLI's warning for a key file others can read, or `None`.
pub fn permission_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "Warning: Your Kaggle API key is readable by other users on this system! To fix this, you can run 'chmod 600 {}'",
            path.display()
        )
    })
}

/// Writes `bytes` to `path` atomically with mode 0600 (directory created
/// with mode 0700 if missing).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kaggle".to_owned());
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    written.map_err(|error| {
        let _ = fs::remove_file(&temporary);
        format!("cannot write {}: {error}", path.display())
    })
}

/// Saves `values` as `<dir>/kaggle.json` (mode 0600, atomically).
pub fn write_config(dir: &Path, values: &Map<String, Value>) -> Result<PathBuf, String> {
    let path = dir.join(CONFIG_FILE);
    let mut text = serde_json::to_string_pretty(&Value::Object(values.clone()))
        .map_err(|error| error.to_string())?;
    text.push('\n');
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// A setting's value and where it came from: `KAGGLE_<NAME>` wins over the file.
pub fn setting(env: &Env, file: &ConfigFile, name: &str) -> Option<(String, String)> {
    let variable = format!("KAGGLE_{}", name.to_uppercase());
    if let Some(value) = env.get(&variable) {
        return Some((value.to_owned(), variable));
    }
    file.string(name)
        .map(|value| (value.to_owned(), file.path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dir_order() {
        let temp = tempfile::tempdir().unwrap();
        let home = temp.path().join("home");
        let xdg = temp.path().join("xdg");
        fs::create_dir_all(&home).unwrap();
        let env = Env::of(&[
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        ]);
        // Nothing exists: ~/.kaggle, where login will write.
        assert_eq!(config_dir(&env), home.join(".kaggle"));
        fs::create_dir_all(xdg.join("kaggle")).unwrap();
        assert_eq!(config_dir(&env), xdg.join("kaggle"));
        fs::write(xdg.join("kaggle/kaggle.json"), "{}").unwrap();
        fs::create_dir_all(home.join(".kaggle")).unwrap();
        assert_eq!(config_dir(&env), xdg.join("kaggle"));
        fs::write(home.join(".kaggle/kaggle.json"), "{}").unwrap();
        assert_eq!(config_dir(&env), home.join(".kaggle"));
        let explicit = Env::of(&[
            ("HOME", home.to_str().unwrap()),
            ("KAGGLE_CONFIG_DIR", "/cfg"),
        ]);
        assert_eq!(config_dir(&explicit), PathBuf::from("/cfg"));
    }

    #[test]
    fn writes_are_private_and_keep_other_keys() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("new/dir");
        let mut values = Map::new();
        values.insert("competition".into(), "titanic".into());
        let path = write_config(&dir, &values).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(permission_warning(&path).is_none());
        let mut config = read_config(&dir).unwrap();
        assert!(config.exists);
        config.values.insert("username".into(), "alice".into());
        write_config(&dir, &config.values).unwrap();
        let again = read_config(&dir).unwrap();
        assert_eq!(again.string("competition"), Some("titanic"));
        assert_eq!(again.string("username"), Some("alice"));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn readable_by_others_gets_the_cli_warning() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join(CONFIG_FILE);
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let warning = permission_warning(&path).unwrap();
        assert!(warning.contains("readable by other users"), "{warning}");
        assert!(warning.ends_with(&format!("'chmod 600 {}'", path.display())));
    }

    #[test]
    fn bad_json_names_the_file_and_env_overrides_settings() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join(CONFIG_FILE), "[1]").unwrap();
        assert!(
            read_config(temp.path())
                .unwrap_err()
                .contains("kaggle.json")
        );
        let missing = read_config(&temp.path().join("none")).unwrap();
        assert!(!missing.exists);
        let mut file = ConfigFile::default();
        file.values.insert("competition".into(), "a".into());
        assert_eq!(
            setting(&Env::default(), &file, "competition").unwrap().0,
            "a"
        );
        let env = Env::of(&[("KAGGLE_COMPETITION", "b")]);
        assert_eq!(
            setting(&env, &file, "competition").unwrap(),
            ("b".to_owned(), "KAGGLE_COMPETITION".to_owned())
        );
    }
}
