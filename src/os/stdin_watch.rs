//! Notices when a program blocks reading its standard input.
//!
//! evcxr's child reads its commands from fd 0, so a plain
//! `std::io::stdin().read_line()` in a cell would wait forever. The relay puts a
//! pipe it controls on fd 0; while a cell runs, this watcher looks at each
//! thread's current system call (`/proc/self/task/*/syscall`) and reports when
//! one is blocked in `read(0, …)` with nothing left in the pipe.

use std::path::Path;

/// True if some thread of this process is blocked in `read` on fd 0.
pub fn thread_blocked_reading_stdin() -> bool {
    process_blocked_reading_stdin(Path::new("/proc/self"))
}

fn process_blocked_reading_stdin(process: &Path) -> bool {
    let Ok(tasks) = std::fs::read_dir(process.join("task")) else {
        return false;
    };
    tasks
        .flatten()
        .any(|task| blocked_in_stdin_read(&task.path().join("syscall")))
}

/// True if a process of group `pgid` whose stdin is the pipe with inode
/// `inode` is blocked reading it (for shell commands run by the kernel).
pub fn group_blocked_reading_pipe(pgid: u32, inode: u64) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    let pipe = format!("pipe:[{inode}]");
    processes.flatten().any(|entry| {
        let path = entry.path();
        entry
            .file_name()
            .to_string_lossy()
            .parse::<u32>()
            .ok()
            .and_then(crate::os::process_tree::state_and_group)
            .map(|(_, group)| group)
            == Some(pgid)
            && std::fs::read_link(path.join("fd/0"))
                .is_ok_and(|target| target.to_string_lossy() == pipe)
            && process_blocked_reading_stdin(&path)
    })
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
    fn a_child_blocked_reading_its_stdin_pipe_is_seen() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line; echo got $line"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(stdin.as_raw_fd(), &mut stat) }, 0);
        let pgid = child.id();
        let mut seen = false;
        for _ in 0..200 {
            if group_blocked_reading_pipe(pgid, stat.st_ino) {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(stdin);
        let _ = child.wait();
        assert!(seen, "sh blocked in read(0) was not detected");
        assert!(
            !group_blocked_reading_pipe(pgid, stat.st_ino),
            "gone after exit"
        );
    }
}
