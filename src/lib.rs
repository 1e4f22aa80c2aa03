//! ferrolab: a Jupyter kernel for Rust, built for notebooks on GPU VMs.
//!
//! Four layers, data flowing one way (see README "Architecture"):
//! [`protocol`] (bytes ⇄ messages) → [`kernel`] (sockets and session) →
//! [`cells`] (the router) → [`engine`] (evcxr) and [`magics`]. [`install`]
//! writes kernelspecs.

pub mod cells;
pub mod engine;
pub mod gateway_launch;
pub mod help_page;
pub mod install;
pub mod kernel;
pub mod kernel_environment;
pub mod logging;
pub mod magics;
pub mod os;
pub mod paths;
pub mod protocol;
pub mod spare;

use std::path::Path;
use std::sync::Arc;

/// Runs the kernel for one connection file until it is shut down.
/// Must be called before the process starts any thread (it sets environment
/// variables).
pub fn run_kernel(connection_file: &Path, kernel_name: &str) -> anyhow::Result<()> {
    let router = prepare_router(kernel_name);
    serve_as_kernel_of(&router, kernel_name);
    kernel::serve(connection_file, router)
}

/// What every kernel does ahead of what its user will ask for, once its
/// engine is first idle: compiles the checkpoint runtime into the build cache
/// when it is not there yet (before the first `:dep` needs it) and, for the
/// next start (a restart, another notebook), starts a warm spare; it tells
/// that spare which crates the session added, so it loads them ahead.
pub(crate) fn serve_as_kernel_of(router: &Arc<cells::Router>, kernel_name: &str) {
    let name = kernel_name.to_owned();
    router.when_engine_idle(Box::new(move || {
        magics::checkpoint::warmup::start_in_background();
        spare::keeper::spawn_detached(&name)
    }));
    let name = kernel_name.to_owned();
    router.when_deps_change(Arc::new(move |lines| {
        spare::preload::remember(&name, &lines)
    }));
}

/// Sets up the process for a kernel (cargo on PATH, logging, the session
/// directory and evcxr's temporary directory) and returns its interpreter.
/// Must be called before the process starts any thread.
pub(crate) fn prepare_interpreter(kernel_name: &str) -> Arc<dyn kernel::Interpreter> {
    prepare_router(kernel_name)
}

/// [`prepare_interpreter`], as the router itself.
pub(crate) fn prepare_router(kernel_name: &str) -> Arc<cells::Router> {
    engine::toolchain::ensure_cargo_on_path();
    logging::init();
    let session = match engine::session_dir::SessionDir::create() {
        Ok(session) => {
            if let Err(error) = magics::checkpoint::write_build_profile(session.path()) {
                log::warn!("the checkpoint runtime's build profile was not written: {error}");
            }
            if std::env::var_os("EVCXR_TMPDIR").is_none() {
                // SAFETY: no other thread exists yet.
                unsafe { std::env::set_var("EVCXR_TMPDIR", session.evcxr_dir()) };
            }
            Some(session)
        }
        Err(error) => {
            log::warn!("no session directory ({error}); using temporary files");
            None
        }
    };
    Arc::new(cells::Router::new(session, kernel_name))
}
