//! Python typed into a Rust cell, as it appears in the Colab tutorials our
//! users follow: when such a cell fails to compile, the error gains one line
//! per recognised Python line naming the ferrolab way to do the same thing.
//!
//! Invariant: only a failing cell gets hints, and only for lines that cannot
//! be Rust (`import x`, `from x import y`, `drive.mount(…)`, `os.environ[…]`,
//! `json.dump(…)`, `torch.save(…)`, `files.upload()`), so working Rust is never
//! second-guessed.

/// Hints for the Python-looking lines of `code`, in order, without repeats.
pub fn hints(code: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in code.lines() {
        if let Some(hint) = hint_for(line.trim())
            && !found.iter().any(|h| h == hint)
        {
            found.push(hint.to_owned());
        }
    }
    if !found.is_empty() {
        found.insert(
            0,
            "This is a Rust kernel (ferrolab): Python lines do not run here.".to_owned(),
        );
    }
    found
}

fn hint_for(line: &str) -> Option<&'static str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let from_import = words.len() >= 4 && words[0] == "from" && words[2] == "import";
    let import = words.len() >= 2
        && words[0] == "import"
        && words[1]
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ','));
    if line.contains("google.colab") || line.contains("drive.mount(") {
        return Some(
            "  Google Drive: mount it from Colab's Files panel (or your VM's own mount), then `%cd /content/drive/MyDrive/...`; for checkpoints that outlive the VM use `%checkpoint auto --dir` on that folder or an `s3://` bucket.",
        );
    }
    if line.contains("os.environ[") || line.contains("os.environ.get(") {
        return Some(
            "  os.environ: set variables with `%env NAME=value` (`%kaggle login` keeps the Kaggle key out of the notebook).",
        );
    }
    if line.contains("json.dump(") || (line.contains("kaggle.json") && line.contains("open(")) {
        return Some(
            "  kaggle.json: `%kaggle login` asks for the key and writes it with mode 0600.",
        );
    }
    if line.contains("torch.save(") || line.contains("torch.load(") {
        return Some(
            "  torch.save: `%checkpoint save` keeps your variables, and candle's `varmap.save(\"model.safetensors\")` with `--files model.safetensors` keeps the weights.",
        );
    }
    if line.contains("files.upload(") || line.contains("files.download(") {
        return Some(
            "  files.upload(): use JupyterLab's upload button (or `%kaggle ... download`, `!curl -O URL`).",
        );
    }
    if from_import || import {
        return Some(
            "  import: add crates with `:dep name = \"version\"` and bring names in with `use crate_name::Item;`.",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_lines_get_the_ferrolab_way() {
        let cell = "from google.colab import drive\ndrive.mount('/content/gdrive')\nimport json\njson.dump(token, file)\nos.environ['KAGGLE_KEY'] = 'x'\ntorch.save(model.state_dict(), 'm.pt')\nfiles.upload()";
        let found = hints(cell);
        assert!(found[0].contains("Rust kernel"));
        for expected in [
            "%cd /content/drive",
            "%kaggle login",
            "%env NAME=value",
            "%checkpoint save",
            "upload button",
            ":dep name",
        ] {
            assert!(
                found.iter().any(|h| h.contains(expected)),
                "{expected}: {found:?}"
            );
        }
        assert_eq!(found.len(), 7, "one line each, no repeats: {found:?}");
    }

    #[test]
    fn rust_is_left_alone() {
        for rust in [
            "use std::collections::HashMap;",
            "let import = 3;",
            "let from = 1; from + 2",
            "println!(\"import json\")",
        ] {
            assert!(hints(rust).is_empty(), "{rust}");
        }
    }
}
