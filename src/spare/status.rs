//! `ferrolab spare status|stop`: what the spare costs, and ending it.

use super::Settings;
use super::keeper::{ask, current_socket};
use super::wire::{Answer, Request};
use std::process::ExitCode;
use sysinfo::{Pid, ProcessRefreshKind, System};

/// Resident memory of `pid` and every process below it (its Rust runtime,
/// the process reaper), in bytes.
pub fn tree_rss(pid: u32) -> u64 {
    let mut system = System::new();
    let kind = ProcessRefreshKind::nothing().with_memory();
    // `descendants` refreshes the table (with memory) before walking it.
    let mut family = crate::os::process_tree::descendants(&mut system, pid, None, kind);
    family.push(pid);
    family
        .iter()
        .filter_map(|pid| system.process(Pid::from_u32(*pid)))
        .map(|process| process.memory())
        .sum()
}

pub fn print(json: bool) -> ExitCode {
    let settings = Settings::from_env();
    let answer =
        current_socket(&settings).and_then(|socket| ask(&socket, &Request::Status).ok().flatten());
    let status = match answer {
        Some(Answer::Status {
            pid,
            key,
            ready,
            age_s,
            loaded,
        }) => Some((pid, key, ready, age_s, tree_rss(pid), loaded)),
        _ => None,
    };
    if json {
        let value = match &status {
            Some((pid, key, ready, age_s, rss, loaded)) => serde_json::json!({
                "enabled": settings.enabled,
                "spare": {"pid": pid, "key": key, "ready": ready, "age_s": age_s, "rss_bytes": rss,
                          "loaded": loaded},
            }),
            None => serde_json::json!({"enabled": settings.enabled, "spare": null}),
        };
        println!("{value}");
        return ExitCode::SUCCESS;
    }
    match status {
        Some((pid, _, ready, age_s, rss, loaded)) => {
            println!(
                "spare kernel: pid {pid}, {}, started {age_s} s ago, {} resident (with its Rust runtime)",
                if ready { "warm" } else { "warming up" },
                ferrolab_tables::size(rss)
            );
            if !loaded.is_empty() {
                println!(
                    "crates built and loaded for its notebook: {}",
                    loaded.join("; ")
                );
            }
        }
        None if settings.enabled => println!(
            "no spare kernel is running (a kernel starts one once its engine is idle; sockets in {})",
            settings.dir.display()
        ),
        None => println!("spare kernels are off (FERROLAB_SPARE=0)"),
    }
    ExitCode::SUCCESS
}

pub fn stop() -> ExitCode {
    let settings = Settings::from_env();
    match current_socket(&settings).map(|socket| ask(&socket, &Request::Retire)) {
        Some(Ok(Some(Answer::Retiring))) => {
            println!("the spare kernel is ending");
            ExitCode::SUCCESS
        }
        _ => {
            println!("no spare kernel is running");
            ExitCode::SUCCESS
        }
    }
}
