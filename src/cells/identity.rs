//! Who this kernel is, for `kernel_info`: the banner, the language version and
//! the help menu's links.
//!
//! Built from the kernel's probed environment without waiting for it: until
//! `rustc -V` answers, the language version is the compiler that built
//! ferrolab, and GPUs appear in the banner once their probe has finished.

use crate::kernel::KernelIdentity;
use crate::kernel_environment::KernelEnvironment;

/// The identity as known now.
pub fn identity(environment: &KernelEnvironment, kernel_name: &str) -> KernelIdentity {
    let language_version = environment
        .rustc_version_if_known()
        .unwrap_or(env!("FERROLAB_BUILD_RUSTC"))
        .to_owned();
    let gpu_line = match environment.gpus_if_known() {
        [] => String::new(),
        [one] => format!("\nGPU: {one} (%gpu for details)"),
        many => format!("\nGPUs: {} (%gpu for details)", many.join(", ")),
    };
    KernelIdentity {
        banner: format!(
            "ferrolab {} — Rust in Jupyter (evcxr engine, rustc {language_version})\n\
             Rust cells, %magics (%lsmagic), !shell commands, :evcxr commands (:help). Help: `Vec?`, `%cd?`.{gpu_line}",
            env!("CARGO_PKG_VERSION")
        ),
        language_version,
        help_links: help_links(kernel_name),
    }
}

/// The installed manual (served by the Jupyter server from the kernelspec
/// directory) and the Rust documentation.
fn help_links(kernel_name: &str) -> Vec<(String, String)> {
    let manual = format!("/kernelspecs/{kernel_name}/help.html");
    vec![
        ("ferrolab manual".to_owned(), manual.clone()),
        ("ferrolab magics".to_owned(), format!("{manual}#magics")),
        (
            "ferrolab troubleshooting".to_owned(),
            format!("{manual}#troubleshooting"),
        ),
        (
            "Rust standard library".to_owned(),
            "https://doc.rust-lang.org/std/".to_owned(),
        ),
        (
            "The Rust book".to_owned(),
            "https://doc.rust-lang.org/book/".to_owned(),
        ),
        (
            "evcxr commands".to_owned(),
            "https://github.com/evcxr/evcxr/blob/main/COMMON.md".to_owned(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_shows_what_the_probes_found_and_links_the_installed_manual() {
        let environment = KernelEnvironment::default();
        let before = identity(&environment, "rust-gpu");
        assert_eq!(before.language_version, env!("FERROLAB_BUILD_RUSTC"));
        assert!(!before.banner.contains("GPU"));
        assert_eq!(before.help_links[0].1, "/kernelspecs/rust-gpu/help.html");
        environment.probe();
        let after = identity(&environment, "rust-gpu");
        assert_eq!(
            Some(after.language_version.as_str()),
            environment.rustc_version()
        );
        assert!(
            after
                .banner
                .contains(&format!("rustc {}", after.language_version))
        );
    }
}
