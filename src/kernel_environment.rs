//! What this kernel runs on, probed once per kernel: the compiler's version
//! and the GPUs' names (a `rustc -V` and a driver or `nvidia-smi` probe), plus
//! the facts that cost nothing (ferrolab and evcxr versions, target, host, uid).
//!
//! One value is made when the kernel starts and shared by the banner
//! (`cells::identity`, which never waits: it shows what is known so far) and
//! checkpoints (`magics::checkpoint`, which record the whole environment in a
//! manifest and wait for a probe still running rather than probe again).

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The probed facts; each probe runs at most once.
#[derive(Debug, Default)]
pub struct KernelEnvironment {
    rustc: OnceLock<Option<String>>,
    gpus: OnceLock<Vec<String>>,
}

impl KernelEnvironment {
    /// Runs both probes now (the kernel calls this on a background thread at start).
    pub fn probe(&self) {
        // The driver's /proc files answer at once; nvidia-smi (slower) only
        // where they are missing, e.g. in some containers.
        self.gpus();
        self.rustc_version();
    }

    /// `rustc -V`'s version; probes (or waits for the probe) the first time.
    pub fn rustc_version(&self) -> Option<&str> {
        self.rustc
            .get_or_init(crate::engine::toolchain::rustc_version)
            .as_deref()
    }

    /// The GPUs' names; probes (or waits for the probe) the first time.
    pub fn gpus(&self) -> &[String] {
        self.gpus.get_or_init(crate::magics::gpu::gpu_names)
    }

    /// The compiler's version if its probe has finished.
    pub fn rustc_version_if_known(&self) -> Option<&str> {
        self.rustc.get().and_then(Option::as_deref)
    }

    /// The GPUs' names if their probe has finished (none until then).
    pub fn gpus_if_known(&self) -> &[String] {
        self.gpus.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// Kernel, compiler and machine as a checkpoint manifest records them
    /// (and restore compares): the working directory is read each time.
    pub fn manifest_entries(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("ferrolab".into(), env!("CARGO_PKG_VERSION").into());
        env.insert("evcxr".into(), "0.22".into());
        if let Some(rustc) = self.rustc_version() {
            env.insert("rustc".into(), rustc.to_owned());
        }
        env.insert(
            "target".into(),
            format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        );
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            env.insert("host".into(), host.trim().to_owned());
        }
        // SAFETY: getuid cannot fail.
        env.insert("uid".into(), unsafe { libc::getuid() }.to_string());
        let gpus = self.gpus();
        if !gpus.is_empty() {
            env.insert("gpu".into(), gpus.join(", "));
        }
        if let Ok(cwd) = std::env::current_dir() {
            env.insert("cwd".into(), cwd.to_string_lossy().into_owned());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_run_once_and_the_banner_view_never_waits() {
        let environment = KernelEnvironment::default();
        assert_eq!(environment.rustc_version_if_known(), None);
        assert!(environment.gpus_if_known().is_empty());
        environment.probe();
        // This machine's rustc built ferrolab: the probe found it.
        let version = environment.rustc_version().expect("rustc -V");
        assert_eq!(environment.rustc_version_if_known(), Some(version));
        assert!(std::ptr::eq(environment.rustc_version().unwrap(), version));
        let entries = environment.manifest_entries();
        assert_eq!(entries["rustc"], version);
        assert_eq!(entries["ferrolab"], env!("CARGO_PKG_VERSION"));
        assert!(entries.contains_key("cwd") && entries.contains_key("uid"));
    }
}
