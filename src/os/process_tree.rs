//! Processes descended from this one (cargo, rustc, the evcxr runtime and what
//! it started), from the OS process table.
//!
//! Threads are excluded: on Linux the table lists each thread as a child of
//! its process, and signalling a thread id signals the whole process.
//! [`reaper`] ends the process groups the kernel started when the kernel ends.

pub mod reaper;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Refreshes `system` and returns the descendants of `root` (not `root`
/// itself), never descending into `spared` or its children.
pub fn descendants(
    system: &mut System,
    root: u32,
    spared: Option<u32>,
    kind: ProcessRefreshKind,
) -> Vec<u32> {
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    let spared = spared.map(Pid::from_u32);
    let mut family = vec![Pid::from_u32(root)];
    let mut index = 0;
    while index < family.len() {
        let parent = family[index];
        for (pid, process) in system.processes() {
            if process.parent() == Some(parent)
                && process.thread_kind().is_none()
                && Some(*pid) != spared
                && !family.contains(pid)
            {
                family.push(*pid);
            }
        }
        index += 1;
    }
    family.into_iter().skip(1).map(|pid| pid.as_u32()).collect()
}

/// The state letter and process group of `/proc/<pid>/stat` (the fields
/// after the parenthesised command name, which may itself contain spaces).
pub fn state_and_group(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// Live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(state_and_group(*pid), Some((state, group)) if group == pgid && state != 'Z' && state != 'X'))
        .collect()
}

/// Sends `signal` to every process of group `pgid`; false when none is left
/// (or the group is not ours to signal).
pub fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: kill(2) with a negative pid signals that group and nothing else;
    // pgid > 0 here, so never "every process" (-1) or our own group (0).
    pgid > 0 && unsafe { libc::kill(-pgid, signal) } == 0
}

/// True while some process of group `pgid` is alive. Zombies do not count:
/// orphans reparented to an init that does not reap them must not look alive.
pub fn group_alive(pgid: u32) -> bool {
    !group_members(pgid).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_child_processes_but_not_threads() {
        let _thread = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut system = System::new();
        let found = descendants(
            &mut system,
            std::process::id(),
            None,
            ProcessRefreshKind::nothing(),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        // No entry is a thread of this test process.
        let me = std::process::id();
        let tasks: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|t| t.file_name().to_str()?.parse().ok())
            .filter(|tid| *tid != me)
            .collect();
        assert!(
            found.iter().all(|pid| !tasks.contains(pid)),
            "{found:?} vs threads {tasks:?}"
        );
    }

    #[test]
    fn groups_are_alive_until_their_processes_end() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        assert_eq!(state_and_group(pgid).map(|(_, group)| group), Some(pgid));
        assert!(group_alive(pgid));
        let _ = child.kill();
        // Still unreaped: a zombie, which does not count as alive.
        for _ in 0..100 {
            if !group_alive(pgid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!group_alive(pgid));
        let _ = child.wait();
    }

    #[test]
    fn spared_subtrees_are_left_out() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut system = System::new();
        let found = descendants(
            &mut system,
            std::process::id(),
            Some(child.id()),
            ProcessRefreshKind::nothing(),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(!found.contains(&child.id()));
    }
}
