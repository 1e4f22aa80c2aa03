//! The operating-system calls ferrolab makes, in one place: file descriptors
//! (`fds`: pipes, duplicates, non-blocking reads, poll), the process table and
//! process groups (`process_tree`, and its `reaper` that ends the groups the
//! kernel started), and noticing a program blocked reading its standard input
//! (`stdin_watch`). The engine's relay, the shell magic, logging and the
//! kernel's usage report use them; nothing here knows about Jupyter or Rust
//! cells. Linux (and /proc) first; every call is checked and its `unsafe`
//! block says why it is sound.

pub mod fds;
pub mod process_tree;
pub mod stdin_watch;
