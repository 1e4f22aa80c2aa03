//! Ends the process groups the kernel started, on every way the kernel ends.
//!
//! Shell commands and the Rust runtime run in process groups of their own (so
//! an interrupt can stop a whole pipeline, and a SIGINT to the kernel's group
//! never reaches them). The flip side: a signal to the kernel's group does not
//! reach them either, so when the kernel is killed (`shutdown_kernel(now=True)`
//! sends SIGKILL to the kernel's group) they would live on.
//!
//! Two things end them:
//! - [`enroll`] makes every such child die with the kernel (`PR_SET_PDEATHSIG`)
//!   and registers its group with the reaper;
//! - the reaper, a tiny `/bin/sh` loop in a process group of its own, reads
//!   registrations from a socket whose other end only the kernel holds. When the
//!   kernel is gone, however it ended, the socket reaches end-of-file and the
//!   reaper sends SIGTERM to every registered group (and to the kernel's own
//!   group, when the kernel leads a session of its own, as under Jupyter: that
//!   ends cargo and rustc), then SIGKILL to what is left after two seconds.
//!
//! A clean shutdown does not wait for that: [`end_all`] asks the reaper to end
//! the registered groups now and waits for its answer.
//!
//! Invariants: a group is registered by the child itself, between `fork` and
//! `exec`, so no group the kernel started is missed, even if the kernel dies a
//! moment later; dead groups are dropped from the list whenever a group is
//! registered or [`forget_ended`] is called, so a recycled group id is not
//! signalled; the reaper never ends its own group or one it was not told about.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The reaper's loop. `$1` is the kernel's own group when it may be ended
/// with the kernel (empty otherwise). Lines: `+PGID` registers a group, `?`
/// forgets dead ones, `end` ends the registered groups and answers `ended`.
const SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
own=$1
groups=
alive() { kill -s 0 -- "-$1" 2>/dev/null; }
forget_ended() {
  kept=
  for g in $groups; do alive "$g" && kept="$kept $g"; done
  groups=$kept
}
end_groups() {
  [ $# -eq 0 ] && return
  for g in "$@"; do kill -s TERM -- "-$g" 2>/dev/null; done
  n=0
  while [ $n -lt 20 ]; do
    left=
    for g in "$@"; do alive "$g" && left="$left $g"; done
    [ -z "$left" ] && return
    sleep 0.1 2>/dev/null
    n=$((n + 1))
  done
  for g in "$@"; do kill -s KILL -- "-$g" 2>/dev/null; done
}
while IFS= read -r line; do
  case $line in
    +*) forget_ended; groups="$groups ${line#+}" ;;
    '?') forget_ended ;;
    end) end_groups $groups; groups=; echo ended ;;
  esac
done
end_groups $groups $own
"#;

struct Reaper {
    pid: u32,
    socket: Mutex<UnixStream>,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();
/// The kernel's end of the reaper's socket, for children between fork and exec.
static SOCKET_FD: AtomicI32 = AtomicI32::new(-1);

/// Starts the reaper (once per process). Errors leave children unguarded
/// except by `PR_SET_PDEATHSIG`.
pub fn start() -> std::io::Result<()> {
    if REAPER.get().is_some() {
        return Ok(());
    }
    let (ours, theirs) = UnixStream::pair()?;
    // SAFETY: getpid, getsid and getpgrp cannot fail for the calling process.
    let (pid, sid, pgrp) = unsafe { (libc::getpid(), libc::getsid(0), libc::getpgrp()) };
    // Under Jupyter the kernel leads a session and a group of its own: what is
    // left in that group when the kernel is gone (cargo, rustc) is ours.
    let own_group = if sid == pid && pgrp == pid {
        pid.to_string()
    } else {
        String::new()
    };
    let input: OwnedFd = theirs.try_clone()?.into();
    let output: OwnedFd = theirs.into();
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("ferrolab-reaper")
        .arg(own_group)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::from(input))
        .stdout(Stdio::from(output))
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn()?;
    let fd = ours.as_raw_fd();
    let reaper = Reaper {
        pid: child.id(),
        socket: Mutex::new(ours),
    };
    if REAPER.set(reaper).is_ok() {
        SOCKET_FD.store(fd, Ordering::SeqCst);
    }
    // The child is never waited for: it outlives the kernel by design.
    drop(child);
    Ok(())
}

/// The reaper's process id (so that scans for build processes spare it).
pub fn pid() -> Option<u32> {
    REAPER.get().map(|reaper| reaper.pid)
}

/// Puts the child `command` will start in a process group of its own, kills it
/// when the spawning thread's process dies, and registers the group with the
/// reaper. Spawn from a thread that outlives the child (the death signal
/// follows the thread that forked: the cell thread waiting for a command, the
/// engine thread for the runtime).
pub fn enroll(command: &mut Command) {
    command.process_group(0);
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (prctl, getppid, getpid, send); it
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::getppid() != parent {
                // The kernel died before the line above took effect.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            register_self();
            Ok(())
        });
    }
}

/// In a freshly forked child: sends `+<own pid>\n` to the reaper.
fn register_self() {
    let fd = SOCKET_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut line = [0u8; 16];
    // SAFETY: getpid cannot fail.
    let length = format_registration(unsafe { libc::getpid() } as u32, &mut line);
    // SAFETY: sending our own stack buffer; MSG_NOSIGNAL keeps a closed socket
    // from raising SIGPIPE (whose default action would kill the child).
    unsafe {
        libc::send(fd, line.as_ptr().cast(), length, libc::MSG_NOSIGNAL);
    }
}

/// Writes `+<pid>\n` into `out` without allocating; returns its length.
fn format_registration(pid: u32, out: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 10];
    let mut count = 0;
    let mut rest = pid;
    loop {
        digits[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out[0] = b'+';
    for index in 0..count {
        out[1 + index] = digits[count - 1 - index];
    }
    out[1 + count] = b'\n';
    count + 2
}

/// Asks the reaper to drop groups that have ended.
pub fn forget_ended() {
    if let Some(reaper) = REAPER.get() {
        let mut socket = reaper.socket.lock().unwrap_or_else(|p| p.into_inner());
        let _ = socket.write_all(b"?\n");
    }
}

/// Ends every registered group now (SIGTERM, then SIGKILL after two seconds)
/// and waits up to `timeout` for the reaper to report it done. The kernel's
/// own group is left alone: the kernel is still in it.
pub fn end_all(timeout: Duration) -> bool {
    let Some(reaper) = REAPER.get() else {
        return false;
    };
    let mut socket = reaper.socket.lock().unwrap_or_else(|p| p.into_inner());
    if socket.write_all(b"end\n").is_err() || socket.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    let Ok(reader) = socket.try_clone() else {
        return false;
    };
    let mut answer = String::new();
    match BufReader::new(reader).read_line(&mut answer) {
        Ok(_) => answer.trim() == "ended",
        Err(error) => {
            log::warn!("the process reaper did not answer: {error}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::process_tree::{group_alive, state_and_group};
    use std::time::Instant;

    #[test]
    fn end_all_ends_an_enrolled_group_that_ignores_sigterm_orphans_included() {
        start().unwrap();
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "trap '' TERM; sleep 30 & echo $!; wait"])
            .stdout(Stdio::piped());
        enroll(&mut command);
        let mut child = command.spawn().unwrap();
        let group = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let background: u32 = line.trim().parse().unwrap();
        assert_eq!(state_and_group(background).map(|(_, g)| g), Some(group));
        assert!(
            end_all(Duration::from_secs(20)),
            "the reaper did not answer"
        );
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(20);
        while group_alive(group) {
            assert!(Instant::now() < deadline, "group {group} is still alive");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reaper itself stays, for the kernel's end.
        let reaper = pid().unwrap();
        assert!(state_and_group(reaper).is_some_and(|(state, _)| state != 'Z'));
    }

    #[test]
    fn registration_lines_are_formatted_without_allocating() {
        for pid in [0u32, 7, 10, 4_194_304, u32::MAX] {
            let mut line = [0u8; 16];
            let length = format_registration(pid, &mut line);
            assert_eq!(&line[..length], format!("+{pid}\n").as_bytes());
        }
    }
}
