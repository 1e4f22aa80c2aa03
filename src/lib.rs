//! ferrolab: a Jupyter kernel for Rust, built for notebooks on GPU VMs.
//!
//! Four layers, data flowing one way (see README "Architecture"):
//! [`protocol`] (bytes ⇄ messages) → [`kernel`] (sockets and session) →
//! [`cells`] (the router) → [`engine`] (evcxr). [`install`] writes kernelspecs.

pub mod cells;
pub mod engine;
pub mod install;
pub mod kernel;
pub mod logging;
pub mod process_tree;
pub mod protocol;

use std::path::Path;
use std::sync::Arc;

/// Runs the kernel for one connection file until it is shut down.
pub fn run_kernel(connection_file: &Path) -> anyhow::Result<()> {
    engine::toolchain::ensure_cargo_on_path();
    logging::init();
    kernel::serve(connection_file, Arc::new(cells::Router::new()))
}
