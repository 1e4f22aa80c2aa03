//! Notices when user code blocks reading its standard input.
//!
//! evcxr's child reads its commands from fd 0, so a plain
//! `std::io::stdin().read_line()` in a cell would wait forever. The relay puts a
//! pipe it controls on fd 0; while a cell runs, this watcher looks at each
//! thread's current system call (`/proc/self/task/*/syscall`) and reports when
//! one is blocked in `read(0, …)` with nothing left in the pipe.

use std::path::Path;

/// True if some thread of this process is blocked in `read` on fd 0.
pub fn thread_blocked_reading_stdin() -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks
        .flatten()
        .any(|task| blocked_in_stdin_read(&task.path().join("syscall")))
}

fn blocked_in_stdin_read(syscall_file: &Path) -> bool {
    std::fs::read_to_string(syscall_file)
        .map(|text| is_stdin_read(&text))
        .unwrap_or(false)
}

/// Parses one `/proc/<pid>/task/<tid>/syscall` line: the syscall number, then
/// its arguments in hex.
fn is_stdin_read(line: &str) -> bool {
    let mut fields = line.split_whitespace();
    let number = fields.next().and_then(|n| n.parse::<libc::c_long>().ok());
    let first_argument = fields.next();
    number == Some(libc::SYS_read) && first_argument == Some("0x0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_syscall_lines() {
        let read0 = format!(
            "{} 0x0 0x7ffd5c3e8a40 0x2000 0x0 0x0 0x0 0x7ffd 0x7f",
            libc::SYS_read
        );
        let read3 = format!(
            "{} 0x3 0x7ffd5c3e8a40 0x2000 0x0 0x0 0x0 0x7ffd 0x7f",
            libc::SYS_read
        );
        assert!(is_stdin_read(&read0));
        assert!(!is_stdin_read(&read3));
        assert!(!is_stdin_read("running"));
        assert!(!is_stdin_read("-1 0x7ffd 0x7f"));
    }

    #[test]
    fn a_thread_blocked_on_a_pipe_read_is_seen_only_for_fd_0() {
        // This test process reads fd 0 nowhere; no thread should match.
        assert!(!thread_blocked_reading_stdin());
    }
}
