//! Writes and removes the kernelspec (`kernel.json` and logos).
//!
//! Locations follow Jupyter's data directories: `--user` is
//! `$JUPYTER_DATA_DIR` or the per-user data dir, `--sys-prefix` is the active
//! virtualenv (or the prefix of the `python3` on PATH), `--prefix DIR` is
//! `DIR/share/jupyter`. The spec's argv holds this binary's absolute path
//! (or the one given with `--binary`, for specs run on other hosts).
//!
//! Three flavours: the local kernel (a Jupyter client starts it), and two for
//! Jupyter Enterprise Gateway, whose process proxies start
//! `ferrolab gateway-launch` on SSH hosts (`distributed`) or in a pod
//! (`kubernetes`, through the gateway's own `launch_kubernetes.py`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_JSON: &str = include_str!("../kernelspec/kernel.json");
const DISTRIBUTED_JSON: &str = include_str!("../kernelspec/enterprise-gateway/distributed.json");
const KUBERNETES_JSON: &str = include_str!("../kernelspec/enterprise-gateway/kubernetes.json");

/// Which process starts the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavour {
    /// A Jupyter client on this machine (JupyterLab, Notebook, VS Code, …).
    #[default]
    Local,
    /// Enterprise Gateway's DistributedProcessProxy, over SSH to its hosts.
    Distributed,
    /// Enterprise Gateway's KubernetesProcessProxy, one pod per kernel.
    Kubernetes,
}

impl Flavour {
    fn template(self) -> &'static str {
        match self {
            Flavour::Local => KERNEL_JSON,
            Flavour::Distributed => DISTRIBUTED_JSON,
            Flavour::Kubernetes => KUBERNETES_JSON,
        }
    }

    /// The kernelspec's directory name unless one is given.
    pub fn default_name(self) -> &'static str {
        match self {
            Flavour::Local => "ferrolab",
            Flavour::Distributed => "ferrolab_distributed",
            Flavour::Kubernetes => "ferrolab_kubernetes",
        }
    }

    /// The name shown in the kernel picker unless one is given.
    pub fn default_display_name(self) -> &'static str {
        match self {
            Flavour::Local => "Rust (ferrolab)",
            Flavour::Distributed => "Rust (ferrolab on remote hosts)",
            Flavour::Kubernetes => "Rust (ferrolab on Kubernetes)",
        }
    }
}

/// What to install.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    pub flavour: Flavour,
    /// Shown in the kernel picker; the flavour's default when `None`.
    pub display_name: Option<String>,
    /// The binary's path on the hosts that run the kernel; this binary when `None`.
    pub binary: Option<PathBuf>,
}
const LOGO_32: &[u8] = include_bytes!("../kernelspec/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../kernelspec/logo-64x64.png");
const LOGO_SVG: &[u8] = include_bytes!("../kernelspec/logo-svg.svg");

/// Where kernelspecs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    User,
    SysPrefix,
    Prefix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("kernel name {0:?} is not valid: use ASCII letters, digits, '-', '.' and '_' only")]
    BadName(String),
    #[error("cannot find the user data directory: set JUPYTER_DATA_DIR or HOME")]
    NoHome,
    #[error("--sys-prefix needs an active virtualenv ($VIRTUAL_ENV) or a python3 on PATH: {0}")]
    NoPython(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no kernelspec named {name:?} in {dir}")]
    NotInstalled { name: String, dir: PathBuf },
    #[error("cannot locate the ferrolab binary: {0}")]
    NoBinary(std::io::Error),
    #[error(
        "--binary must be an absolute path (the kernel is started without a working directory): {0}"
    )]
    RelativeBinary(PathBuf),
}

/// `<data dir>` (the one holding `kernels/`) for a location.
pub fn data_dir(location: &Location) -> Result<PathBuf, InstallError> {
    match location {
        Location::User => {
            if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR") {
                return Ok(PathBuf::from(dir));
            }
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .ok_or(InstallError::NoHome)?;
            if cfg!(target_os = "macos") {
                return Ok(home.join("Library/Jupyter"));
            }
            let data = crate::paths::base_dir(crate::paths::Base::Data)
                .unwrap_or_else(|| home.join(".local/share"));
            Ok(data.join("jupyter"))
        }
        Location::SysPrefix => Ok(sys_prefix()?.join("share/jupyter")),
        Location::Prefix(dir) => Ok(dir.join("share/jupyter")),
    }
}

fn sys_prefix() -> Result<PathBuf, InstallError> {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        return Ok(PathBuf::from(venv));
    }
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .map_err(|error| InstallError::NoPython(error.to_string()))?;
    if !output.status.success() {
        return Err(InstallError::NoPython(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

fn check_name(name: &str) -> Result<(), InstallError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid {
        Ok(())
    } else {
        Err(InstallError::BadName(name.to_owned()))
    }
}

/// The kernel.json contents for this binary.
pub fn kernel_json(binary: &Path, name: &str, display_name: &str) -> Value {
    flavoured_kernel_json(Flavour::Local, binary, name, display_name)
}

/// The kernel.json contents of one flavour.
pub fn flavoured_kernel_json(
    flavour: Flavour,
    binary: &Path,
    name: &str,
    display_name: &str,
) -> Value {
    let mut spec: Value = serde_json::from_str(flavour.template()).unwrap_or_default();
    if let Some(argv) = spec.get_mut("argv").and_then(Value::as_array_mut) {
        for arg in argv.iter_mut() {
            if arg == "{ferrolab}" {
                *arg = Value::String(binary.to_string_lossy().into_owned());
            } else if arg == "{name}" {
                *arg = Value::String(name.to_owned());
            }
        }
    }
    spec["display_name"] = Value::String(display_name.to_owned());
    spec
}

/// Installs the kernelspec; returns its directory.
pub fn install(
    location: &Location,
    name: &str,
    options: &SpecOptions,
) -> Result<PathBuf, InstallError> {
    check_name(name)?;
    let binary = match &options.binary {
        Some(binary) if binary.is_absolute() => binary.clone(),
        Some(binary) => return Err(InstallError::RelativeBinary(binary.clone())),
        None => std::env::current_exe()
            .and_then(|exe| exe.canonicalize())
            .map_err(InstallError::NoBinary)?,
    };
    let display_name = options
        .display_name
        .as_deref()
        .unwrap_or(options.flavour.default_display_name());
    let dir = data_dir(location)?.join("kernels").join(name);
    let write = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        std::fs::write(&path, bytes).map_err(|source| InstallError::Write { path, source })
    };
    std::fs::create_dir_all(&dir).map_err(|source| InstallError::Write {
        path: dir.clone(),
        source,
    })?;
    let spec = serde_json::to_string_pretty(&flavoured_kernel_json(
        options.flavour,
        &binary,
        name,
        display_name,
    ))
    .unwrap_or_default();
    write("kernel.json", spec.as_bytes())?;
    write("help.html", crate::help_page::manual().as_bytes())?;
    write("logo-32x32.png", LOGO_32)?;
    write("logo-64x64.png", LOGO_64)?;
    write("logo-svg.svg", LOGO_SVG)?;
    Ok(dir)
}

/// Removes the kernelspec; returns the directory that was removed.
pub fn uninstall(location: &Location, name: &str) -> Result<PathBuf, InstallError> {
    check_name(name)?;
    let dir = data_dir(location)?.join("kernels").join(name);
    if !dir.join("kernel.json").is_file() {
        return Err(InstallError::NotInstalled {
            name: name.to_owned(),
            dir: dir.parent().map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    std::fs::remove_dir_all(&dir).map_err(|source| InstallError::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_json_has_binary_and_message_interrupts() {
        let spec = kernel_json(Path::new("/opt/bin/ferrolab"), "rust", "Rust (test)");
        assert_eq!(
            spec["argv"],
            serde_json::json!([
                "/opt/bin/ferrolab",
                "kernel",
                "--connection-file",
                "{connection_file}",
                "--kernel-name",
                "rust"
            ])
        );
        assert_eq!(spec["display_name"], "Rust (test)");
        assert_eq!(spec["language"], "rust");
        assert_eq!(spec["interrupt_mode"], "message");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ferrolab").is_ok());
        assert!(check_name("rust-1.95_x").is_ok());
        assert!(check_name("bad name").is_err());
        assert!(check_name("../escape").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn install_and_uninstall_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Prefix(dir.path().to_owned());
        let options = SpecOptions {
            display_name: Some("Rust (test)".into()),
            ..SpecOptions::default()
        };
        let installed = install(&location, "ferrolab-test", &options).unwrap();
        assert_eq!(
            installed,
            dir.path().join("share/jupyter/kernels/ferrolab-test")
        );
        for file in [
            "kernel.json",
            "logo-32x32.png",
            "logo-64x64.png",
            "logo-svg.svg",
            "help.html",
        ] {
            assert!(installed.join(file).is_file(), "{file}");
        }
        let spec: Value =
            serde_json::from_str(&std::fs::read_to_string(installed.join("kernel.json")).unwrap())
                .unwrap();
        assert!(Path::new(spec["argv"][0].as_str().unwrap()).is_absolute());
        uninstall(&location, "ferrolab-test").unwrap();
        assert!(!installed.exists());
        assert!(matches!(
            uninstall(&location, "ferrolab-test"),
            Err(InstallError::NotInstalled { .. })
        ));
    }

    #[test]
    fn gateway_specs_start_the_launcher_with_every_gateway_parameter() {
        let spec = flavoured_kernel_json(
            Flavour::Distributed,
            Path::new("/usr/local/bin/ferrolab"),
            "ferrolab_distributed",
            "Rust (hosts)",
        );
        let argv: Vec<&str> = spec["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| arg.as_str().unwrap())
            .collect();
        assert_eq!(argv[..2], ["/usr/local/bin/ferrolab", "gateway-launch"]);
        for (flag, value) in [
            ("--kernel-name", "ferrolab_distributed"),
            ("--kernel-id", "{kernel_id}"),
            ("--response-address", "{response_address}"),
            ("--public-key", "{public_key}"),
            ("--port-range", "{port_range}"),
        ] {
            let at = argv.iter().position(|arg| *arg == flag).unwrap();
            assert_eq!(argv[at + 1], value, "{flag}");
        }
        assert_eq!(
            spec["metadata"]["process_proxy"]["class_name"],
            "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"
        );
        let spec = flavoured_kernel_json(Flavour::Kubernetes, Path::new("/x"), "k", "K");
        assert_eq!(
            spec["metadata"]["process_proxy"]["class_name"],
            "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy"
        );
        assert!(spec["metadata"]["process_proxy"]["config"]["image_name"].is_string());
        let text = spec.to_string();
        for parameter in [
            "{kernel_id}",
            "{response_address}",
            "{public_key}",
            "{port_range}",
        ] {
            assert!(text.contains(parameter), "{parameter}");
        }
    }

    #[test]
    fn a_relative_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = SpecOptions {
            flavour: Flavour::Distributed,
            binary: Some("bin/ferrolab".into()),
            ..SpecOptions::default()
        };
        let error = install(&Location::Prefix(dir.path().to_owned()), "d", &options).unwrap_err();
        assert!(error.to_string().contains("absolute"), "{error}");
    }
}
