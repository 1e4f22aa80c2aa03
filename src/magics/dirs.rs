//! Directory magics: `%cd`, `%pwd`, `%dhist`, `%bookmark`, `%pushd`, `%popd`,
//! `%dirs`.
//!
//! A change moves three things together — the kernel process (so shell
//! commands start there), evcxr (so `:dep ./path` resolves there) and the Rust
//! runtime (so `std::env::current_dir()` and relative paths agree) — the
//! runtime through the relay, without compiling anything. A target that does
//! not exist or is not a directory is an error and nothing moves.

use super::args::{expand_path, parse, words};
use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::kernel::StreamName;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn magics() -> Vec<Magic> {
    vec![
        Magic {
            name: "cd",
            kind: Kind::Line,
            summary: "change the working directory of the kernel, shell commands and Rust code",
            help: CD_HELP,
            run: cd,
        },
        Magic {
            name: "pwd",
            kind: Kind::Line,
            summary: "the current working directory",
            help: "%pwd\n\nReturns the working directory that shell commands and Rust code share.",
            run: pwd,
        },
        Magic {
            name: "dhist",
            kind: Kind::Line,
            summary: "directory history",
            help: "%dhist [N | N1 N2]\n\nLists the directories visited with %cd (oldest first), numbered for\n`%cd -N`. `%dhist 5` shows the last 5; `%dhist 2 6` entries 2 to 5.",
            run: dhist,
        },
        Magic {
            name: "bookmark",
            kind: Kind::Line,
            summary: "name directories for `%cd -b NAME`",
            help: "%bookmark NAME [DIR]   bookmark DIR (default: the current directory)\n%bookmark -l           list bookmarks\n%bookmark -d NAME      delete one\n%bookmark -r           delete all\n\nBookmarks are kept in ~/.local/share/ferrolab/bookmarks.json\n(FERROLAB_BOOKMARKS_FILE) and shared by all kernels.\n\nExample:\n    %bookmark data /content/drive/MyDrive/hw2/data\n    %cd -b data",
            run: bookmark,
        },
        Magic {
            name: "pushd",
            kind: Kind::Line,
            summary: "push the current directory on a stack and change directory",
            help: "%pushd [DIR]\n\nRemembers the current directory, then does `%cd DIR` (home if DIR is\nomitted). `%popd` comes back.",
            run: pushd,
        },
        Magic {
            name: "popd",
            kind: Kind::Line,
            summary: "change to the directory on top of the stack and remove it",
            help: "%popd\n\nReturns to the directory saved by the last %pushd.",
            run: popd,
        },
        Magic {
            name: "dirs",
            kind: Kind::Line,
            summary: "the %pushd directory stack",
            help: "%dirs\n\nReturns the directory stack, most recent first.",
            run: dirs,
        },
    ]
}

const CD_HELP: &str = "\
%cd [-q] [DIR | - | -N | --PART | -b NAME]

Changes the working directory of the kernel, of every later shell command and
of the running Rust code (`std::env::current_dir()`, relative paths in
`std::fs`). No compile is involved.

    %cd data            relative to the current directory; ~ and $VAR expand
    %cd                 the home directory
    %cd -               the previous directory
    %cd -3              entry 3 of %dhist
    %cd --runs          the latest directory in %dhist whose name contains `runs`
    %cd -b data         the bookmark `data` (see %bookmark)
    %cd -q DIR          without printing the new directory

A directory that does not exist (or is not a directory) is an error, and
nothing moves. `!cd DIR` cannot do this: it runs in a shell that exits at once.";

/// Moves kernel, evcxr and runtime to `target` (already checked to be a dir).
fn change_to(call: &mut Call, target: &Path, quiet: bool) -> MagicResult {
    let target = target.canonicalize().map_err(|error| {
        ErrorInfo::usage(format!("%cd: cannot resolve {}: {error}", target.display()))
    })?;
    if !target.is_dir() {
        return Err(ErrorInfo::usage(format!(
            "%cd: {} is not a directory",
            target.display()
        )));
    }
    call.engine.chdir(&target).map_err(|error| {
        ErrorInfo::new(
            "OSError",
            format!(
                "%cd: the Rust runtime could not change to {}: {error}",
                target.display()
            ),
        )
    })?;
    if let Err(error) = std::env::set_current_dir(&target) {
        // Put the runtime back where the kernel still is.
        if let Ok(current) = std::env::current_dir() {
            let _ = call.engine.chdir(&current);
        }
        return Err(ErrorInfo::new(
            "OSError",
            format!("%cd: {}: {error}", target.display()),
        ));
    }
    if call.state.dir_history.last() != Some(&target) {
        call.state.dir_history.push(target.clone());
    }
    if !quiet {
        call.cell
            .stream(StreamName::Stdout, &format!("{}\n", target.display()));
    }
    Ok(None)
}

/// Resolves a user-typed directory against the current one, after `~`/`$VAR`.
fn resolve(text: &str) -> Result<PathBuf, ErrorInfo> {
    let expanded = PathBuf::from(expand_path(text)?);
    Ok(if expanded.is_absolute() {
        expanded
    } else {
        current_dir()?.join(expanded)
    })
}

fn current_dir() -> Result<PathBuf, ErrorInfo> {
    std::env::current_dir()
        .map_err(|_| ErrorInfo::usage("CWD no longer exists - please use %cd to change directory."))
}

fn home() -> Result<PathBuf, ErrorInfo> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| ErrorInfo::usage("%cd: HOME is not set"))
}

fn cd(call: &mut Call) -> MagicResult {
    let mut words = words("cd", call.args)?;
    let quiet = words.first().is_some_and(|w| w == "-q");
    if quiet {
        words.remove(0);
    }
    let target = match words.as_slice() {
        [] => home()?,
        [dash] if dash == "-" => {
            let history = &call.state.dir_history;
            if history.len() < 2 {
                return Err(ErrorInfo::usage(
                    "%cd -: No previous directory to change to.",
                ));
            }
            history[history.len() - 2].clone()
        }
        [flag, name] if flag == "-b" => bookmark_target(call, name)?,
        [flag] if flag.starts_with("--") && flag.len() > 2 => {
            let part = &flag[2..];
            let history = &call.state.dir_history;
            let by_name = history.iter().rev().find(|dir| {
                dir.file_name()
                    .is_some_and(|name| name.to_string_lossy().contains(part))
            });
            let anywhere = || {
                history
                    .iter()
                    .rev()
                    .find(|dir| dir.to_string_lossy().contains(part))
            };
            by_name.or_else(anywhere).cloned().ok_or_else(|| {
                ErrorInfo::usage(format!(
                    "%cd --{part}: No matching entry in directory history"
                ))
            })?
        }
        [flag] if flag.starts_with('-') && flag[1..].parse::<usize>().is_ok() => {
            let index: usize = flag[1..].parse().unwrap_or_default();
            call.state.dir_history.get(index).cloned().ok_or_else(|| {
                ErrorInfo::usage(format!(
                    "%cd {flag}: The requested directory does not exist in history (it has {} entries; see %dhist).",
                    call.state.dir_history.len()
                ))
            })?
        }
        [path] => {
            let candidate = resolve(path)?;
            if candidate.is_dir() {
                candidate
            } else if let Some(marked) = load_bookmarks(call).get(path.as_str()).cloned() {
                call.cell.stream(
                    StreamName::Stdout,
                    &format!("(bookmark:{path}) -> {}\n", marked.display()),
                );
                marked
            } else if candidate.exists() {
                return Err(ErrorInfo::usage(format!(
                    "%cd: {} is not a directory",
                    candidate.display()
                )));
            } else {
                return Err(ErrorInfo::new(
                    "FileNotFoundError",
                    format!(
                        "%cd: no such directory: {path} (tried {})",
                        candidate.display()
                    ),
                ));
            }
        }
        _ => {
            return Err(ErrorInfo::usage(format!(
                "%cd takes one directory, got {}: quote a path with spaces (%cd \"my dir\")",
                words.len()
            )));
        }
    };
    if !target.exists() {
        return Err(ErrorInfo::new(
            "FileNotFoundError",
            format!("%cd: no such directory: {}", target.display()),
        ));
    }
    change_to(call, &target, quiet)
}

fn pwd(_call: &mut Call) -> MagicResult {
    let dir = current_dir()?;
    Ok(text_result(format!("{:?}", dir.to_string_lossy())))
}

fn dhist(call: &mut Call) -> MagicResult {
    let history = &call.state.dir_history;
    let numbers: Vec<usize> = words("dhist", call.args)?
        .iter()
        .map(|w| {
            w.parse()
                .map_err(|_| ErrorInfo::usage(format!("%dhist: `{w}` is not a number")))
        })
        .collect::<Result<_, _>>()?;
    let (start, end) = match numbers.as_slice() {
        [] => (0, history.len()),
        [n] => (history.len().saturating_sub(*n), history.len()),
        [a, b] => ((*a).min(history.len()), (*b).min(history.len())),
        _ => return Err(ErrorInfo::usage("%dhist takes at most two numbers")),
    };
    let mut text = String::from("Directory history (kept in %dhist)\n");
    for (index, dir) in history.iter().enumerate().take(end).skip(start) {
        text.push_str(&format!("{index}: {}\n", dir.display()));
    }
    call.cell.stream(StreamName::Stdout, &text);
    Ok(None)
}

#[derive(clap::Parser, Debug)]
#[command(disable_help_flag = true)]
struct BookmarkArgs {
    /// List bookmarks.
    #[arg(short = 'l')]
    list: bool,
    /// Delete a bookmark.
    #[arg(short = 'd', value_name = "NAME")]
    delete: Option<String>,
    /// Delete all bookmarks.
    #[arg(short = 'r')]
    reset: bool,
    name: Option<String>,
    dir: Option<String>,
}

fn load_bookmarks(call: &Call) -> BTreeMap<String, PathBuf> {
    call.state
        .bookmarks_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn save_bookmarks(call: &Call, bookmarks: &BTreeMap<String, PathBuf>) -> Result<(), ErrorInfo> {
    let path = call.state.bookmarks_file.as_ref().ok_or_else(|| {
        ErrorInfo::usage(
            "%bookmark: no place to keep bookmarks (set HOME or FERROLAB_BOOKMARKS_FILE)",
        )
    })?;
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension("json.tmp");
        std::fs::write(
            &temporary,
            serde_json::to_vec_pretty(bookmarks).unwrap_or_default(),
        )?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|error| {
        ErrorInfo::new(
            "OSError",
            format!("%bookmark: cannot save {}: {error}", path.display()),
        )
    })
}

fn bookmark_target(call: &Call, name: &str) -> Result<PathBuf, ErrorInfo> {
    load_bookmarks(call).get(name).cloned().ok_or_else(|| {
        ErrorInfo::usage(format!(
            "Bookmark '{name}' not found.  Use '%bookmark -l' to see your bookmarks."
        ))
    })
}

fn bookmark(call: &mut Call) -> MagicResult {
    let args: BookmarkArgs = parse("bookmark", call.args)?;
    let mut bookmarks = load_bookmarks(call);
    if args.list {
        let mut text = String::from("Current bookmarks:\n");
        for (name, dir) in &bookmarks {
            text.push_str(&format!("{name} -> {}\n", dir.display()));
        }
        call.cell.stream(StreamName::Stdout, &text);
        return Ok(None);
    }
    if args.reset {
        bookmarks.clear();
        return save_bookmarks(call, &bookmarks).map(|_| None);
    }
    if let Some(name) = args.delete {
        if bookmarks.remove(&name).is_none() {
            return Err(ErrorInfo::usage(format!(
                "Can't delete bookmark '{name}': it does not exist"
            )));
        }
        return save_bookmarks(call, &bookmarks).map(|_| None);
    }
    let name = args
        .name
        .ok_or_else(|| ErrorInfo::usage("You must specify the bookmark name"))?;
    let dir = match args.dir {
        Some(dir) => resolve(&dir)?,
        None => current_dir()?,
    };
    if !dir.is_dir() {
        return Err(ErrorInfo::usage(format!(
            "%bookmark: {} is not a directory",
            dir.display()
        )));
    }
    bookmarks.insert(name, dir.canonicalize().unwrap_or(dir));
    save_bookmarks(call, &bookmarks).map(|_| None)
}

fn pushd(call: &mut Call) -> MagicResult {
    let words = words("pushd", call.args)?;
    let target = match words.as_slice() {
        [] => home()?,
        [dir] => resolve(dir)?,
        _ => return Err(ErrorInfo::usage("%pushd takes one directory")),
    };
    if !target.is_dir() {
        return Err(ErrorInfo::new(
            "FileNotFoundError",
            format!("%pushd: no such directory: {}", target.display()),
        ));
    }
    let here = current_dir()?;
    change_to(call, &target, true)?;
    call.state.dir_stack.push(here);
    dirs(call)
}

fn popd(call: &mut Call) -> MagicResult {
    let top = call
        .state
        .dir_stack
        .pop()
        .ok_or_else(|| ErrorInfo::usage("%popd on empty stack"))?;
    if let Err(error) = change_to(call, &top, true) {
        call.state.dir_stack.push(top);
        return Err(error);
    }
    call.cell
        .stream(StreamName::Stdout, &format!("popd -> {}\n", top.display()));
    Ok(None)
}

fn dirs(call: &mut Call) -> MagicResult {
    let list: Vec<String> = call
        .state
        .dir_stack
        .iter()
        .rev()
        .map(|dir| dir.to_string_lossy().into_owned())
        .collect();
    Ok(text_result(format!("{list:?}")))
}
