//! Shows cargo's progress while a cell builds.
//!
//! evcxr writes `Compiling <crate>` lines for dependencies to the kernel's own
//! stderr, where a notebook user never sees them (a `:dep` build would sit
//! silent for a minute). This module puts a pipe on fd 2: every line still
//! goes to the original stderr (the Jupyter server's console), and while a
//! cell runs, cargo progress lines also go to the cell as `stderr` output.

use crate::kernel::{CellContext, StreamName};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

/// The cell that sees build progress now (`None` between cells).
pub type ProgressSink = Arc<Mutex<Option<CellContext>>>;

/// Redirects fd 2 through a reader thread. Errors leave stderr untouched.
pub fn capture(sink: ProgressSink) -> std::io::Result<()> {
    let (read_end, write_end) = crate::os::fds::pipe()?;
    let mut original = std::fs::File::from(crate::os::fds::duplicate(2)?);
    std::thread::Builder::new()
        .name("ferrolab-stderr".into())
        .spawn(move || {
            let reader = BufReader::new(std::fs::File::from(read_end));
            for line in reader.split(b'\n').map_while(Result::ok) {
                let _ = original.write_all(&line);
                let _ = original.write_all(b"\n");
                let text = String::from_utf8_lossy(&line);
                if is_cargo_progress(&text)
                    && let Some(cell) = sink.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                {
                    cell.stream(StreamName::Stderr, &format!("{}\n", text.trim()));
                }
            }
        })?;
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto fd 2; the write end stays open as fd 2 after this.
    if unsafe { libc::dup2(write_end.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn is_cargo_progress(line: &str) -> bool {
    const VERBS: [&str; 7] = [
        "Compiling ",
        "Downloading ",
        "Downloaded ",
        "Updating ",
        "Locking ",
        "Blocking ",
        "Fresh ",
    ];
    let trimmed = line.trim_start();
    VERBS.iter().any(|verb| trimmed.starts_with(verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_cargo_progress_lines() {
        assert!(is_cargo_progress("   Compiling regex v1.10.0"));
        assert!(is_cargo_progress("  Downloaded serde v1.0.0"));
        assert!(!is_cargo_progress("[ferrolab 12:00:00 WARN] something"));
        assert!(!is_cargo_progress("thread 'main' panicked"));
    }
}
