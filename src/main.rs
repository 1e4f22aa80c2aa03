//! The `ferrolab` command: the kernel itself, installing its kernelspec, and
//! the shared build cache (`cache`, `prebuild`).
//!
//! The same binary is also evcxr's runtime child, the build cache's rustc
//! wrapper and evcxr's rustc wrapper, so the first three calls below must
//! stay first.

mod prebuild;

use clap::{Args, Parser, Subcommand};
use ferrolab::install::{self, Location};
use ferrolab::magics::build_cache;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ferrolab",
    version,
    about = "A Jupyter kernel for Rust, with notebook magics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the kernel (this is what kernel.json starts).
    Kernel {
        /// The connection file written by the Jupyter client.
        #[arg(long = "connection-file", short = 'f')]
        connection_file: PathBuf,
        /// The kernelspec's name (for help links to its installed manual).
        #[arg(long, default_value = "ferrolab")]
        kernel_name: String,
    },
    /// Run the kernel for Jupyter Enterprise Gateway (what its kernelspecs
    /// start on a remote host or in a pod): bind the ports, send the
    /// encrypted connection info to the gateway, obey its signals.
    GatewayLaunch(GatewayLaunchArgs),
    /// Install the kernelspec so Jupyter lists "Rust (ferrolab)".
    Install {
        #[command(flatten)]
        location: LocationArgs,
        /// Kernelspec name (directory under kernels/; default: ferrolab, or
        /// ferrolab_distributed / ferrolab_kubernetes for the gateway flavours).
        #[arg(long)]
        name: Option<String>,
        /// Name shown in the launcher and kernel picker (default: "Rust
        /// (ferrolab)", or the gateway flavour's name).
        #[arg(long)]
        display_name: Option<String>,
        /// Who starts the kernel: a local Jupyter client, or Jupyter
        /// Enterprise Gateway on SSH hosts or in Kubernetes pods.
        #[arg(long, value_enum, default_value_t = install::Flavour::Local)]
        process_proxy: install::Flavour,
        /// The ferrolab binary's absolute path on the hosts that run the
        /// kernel (default: this binary).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// Remove an installed kernelspec.
    Uninstall {
        #[command(flatten)]
        location: LocationArgs,
        #[arg(long, default_value = "ferrolab")]
        name: String,
    },
    /// The build cache shared by all kernels (FERROLAB_BUILD_CACHE_DIR, _MB).
    Cache {
        #[command(subcommand)]
        action: build_cache::Maintenance,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The warm spare kernel that a restart or the next notebook adopts
    /// (FERROLAB_SPARE=0 turns it off).
    Spare {
        #[command(subcommand)]
        action: SpareAction,
    },
    /// Compile crates into the build cache now, as a notebook's `:dep` would,
    /// e.g. `ferrolab prebuild 'regex = "1"' 'candle-core = "0.9"'`. With no
    /// SPEC: ferrolab's own crates, which every kernel's first `:dep` adds
    /// (`./kernel lab` does this in the background once per start).
    Prebuild {
        /// Dependencies as written after `:dep`.
        #[arg(value_name = "SPEC")]
        specs: Vec<String>,
        /// Only build them all together (skip building each one alone).
        #[arg(long)]
        together: bool,
        /// Internal: run one build in this process.
        #[arg(long, hide = true)]
        in_session: bool,
        /// Internal: a kernel's background warm-up of ferrolab's own crates.
        #[arg(long, hide = true)]
        warm_up: bool,
    },
}

#[derive(Subcommand)]
enum SpareAction {
    /// Show the spare: its process, whether it is warm, its memory.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// End the spare now (the next kernel start is a cold one, and starts a new spare).
    Stop,
    /// Start a spare for this environment in the background.
    Start {
        #[arg(long, default_value = "ferrolab")]
        kernel_name: String,
    },
    /// Internal: be the spare.
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value = "ferrolab")]
        kernel_name: String,
    },
}

/// Enterprise Gateway's launcher arguments; its own spellings
/// (`--RemoteProcessProxy.kernel-id`, …) and a kernel pod's variables work too.
#[derive(Args)]
struct GatewayLaunchArgs {
    /// The kernel's id as the gateway knows it.
    #[arg(long, alias = "RemoteProcessProxy.kernel-id", env = "KERNEL_ID")]
    kernel_id: Option<String>,
    /// HOST:PORT where the gateway waits for the connection info.
    #[arg(
        long,
        alias = "RemoteProcessProxy.response-address",
        env = "RESPONSE_ADDRESS"
    )]
    response_address: Option<String>,
    /// The gateway's RSA public key (base64 DER) that seals the connection info.
    #[arg(
        long,
        alias = "RemoteProcessProxy.public-key",
        env = "PUBLIC_KEY",
        hide_env_values = true
    )]
    public_key: Option<String>,
    /// LOWER..UPPER for every port this kernel opens (0..0: any).
    #[arg(long, alias = "RemoteProcessProxy.port-range", env = "PORT_RANGE")]
    port_range: Option<String>,
    /// Accepted for the gateway's kernelspecs; only `none` is supported.
    #[arg(
        long,
        alias = "RemoteProcessProxy.spark-context-initialization-mode",
        env = "KERNEL_SPARK_CONTEXT_INIT_MODE"
    )]
    spark_context_initialization_mode: Option<String>,
    /// The kernelspec's name (for help links to its installed manual).
    #[arg(long, default_value = "ferrolab")]
    kernel_name: String,
}

#[derive(Args)]
#[group(multiple = false)]
struct LocationArgs {
    /// The per-user Jupyter data directory (default; honours JUPYTER_DATA_DIR).
    #[arg(long)]
    user: bool,
    /// The active virtualenv ($VIRTUAL_ENV) or the prefix of python3 on PATH.
    #[arg(long)]
    sys_prefix: bool,
    /// DIR/share/jupyter.
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,
}

impl LocationArgs {
    fn location(&self) -> Location {
        match (&self.prefix, self.sys_prefix) {
            (Some(dir), _) => Location::Prefix(dir.clone()),
            (None, true) => Location::SysPrefix,
            _ => Location::User,
        }
    }
}

/// mimalloc for the kernel's own allocations: rust-analyzer's type inference,
/// which evcxr runs in this process for every cell, allocates heavily (with
/// glibc's malloc, a warm `a + 1` cost the kernel 80-94 ms of CPU; with
/// mimalloc 40-46 ms). Cells' code lives in its own dylibs with its own std and
/// allocator; no heap object crosses between the two.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs the kernel in this process.
fn run_kernel(connection_file: &Path, kernel_name: &str) -> ExitCode {
    match ferrolab::run_kernel(connection_file, kernel_name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferrolab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    ferrolab::engine::relay::enter_if_child();
    wrap_rustc_if_asked();
    evcxr::runtime_hook();
    ferrolab::spare::remember_launch_env();
    match Cli::parse().command {
        Command::Kernel {
            connection_file,
            kernel_name,
        } => match ferrolab::spare::launch::run_in_spare(&connection_file, &kernel_name) {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => run_kernel(&connection_file, &kernel_name),
        },
        Command::Spare { action } => match action {
            SpareAction::Status { json } => ferrolab::spare::status::print(json),
            SpareAction::Stop => ferrolab::spare::status::stop(),
            SpareAction::Start { kernel_name } => ferrolab::spare::keeper::start(&kernel_name),
            SpareAction::Serve { kernel_name } => ferrolab::spare::keeper::serve(&kernel_name),
        },
        Command::GatewayLaunch(args) => gateway_launch(args),
        Command::Install {
            location,
            name,
            display_name,
            process_proxy,
            binary,
        } => {
            let name = name.unwrap_or_else(|| process_proxy.default_name().to_owned());
            let options = install::SpecOptions {
                flavour: process_proxy,
                display_name,
                binary,
            };
            report(
                install::install(&location.location(), &name, &options)
                    .map(|dir| install_message(&name, &dir, process_proxy)),
            )
        }
        Command::Uninstall { location, name } => report(
            install::uninstall(&location.location(), &name)
                .map(|dir| format!("Removed kernelspec {name} from {}", dir.display())),
        ),
        Command::Cache { action, json } => cache(action, json),
        Command::Prebuild {
            specs,
            together,
            in_session,
            warm_up,
        } => {
            if warm_up {
                prebuild::warm_up()
            } else if in_session {
                prebuild::in_session(&specs)
            } else {
                prebuild::run(&prebuild::Request {
                    specs,
                    together_only: together,
                })
            }
        }
    }
}

/// Cargo runs this binary as `RUSTC_WRAPPER` (with the build cache's
/// variable set) for every crate a kernel builds: the build cache answers,
/// and never returns (the session crate's own compile gets ferrolab's extra
/// flags on the way). When evcxr also wraps rustc (`:cache`,
/// `:allow_static_linking 0`), a compile goes on through evcxr's wrapper in
/// this same binary, so its dylib handling stays in one place.
fn wrap_rustc_if_asked() {
    if std::env::var_os(ferrolab_buildcache::WRAPPER_ENV).is_none() {
        return;
    }
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let names_a_compiler = argv.first().is_some_and(|first| {
        Path::new(first).components().count() > 1 || first.to_string_lossy().starts_with("rustc")
    });
    if !names_a_compiler {
        return;
    }
    // The session crate compiles without local ThinLTO (see session_build).
    let argv = ferrolab::engine::session_build::adjust(argv);
    let mut next = match std::env::current_exe() {
        Ok(exe) if std::env::var_os("EVCXR_RUSTC_WRAPPER").is_some() => {
            let mut next = std::process::Command::new(exe);
            next.args(&argv)
                .env_remove(ferrolab_buildcache::WRAPPER_ENV);
            next
        }
        _ => {
            let mut next = std::process::Command::new(&argv[0]);
            next.args(&argv[1..]);
            next
        }
    };
    next.env_remove(ferrolab_buildcache::WRAPPER_ENV);
    ferrolab_buildcache::wrapper::main(argv, next, build_cache::wrapper_config());
}

fn install_message(name: &str, dir: &Path, flavour: install::Flavour) -> String {
    let mut message = format!("Installed kernelspec {name} in {}", dir.display());
    match flavour {
        install::Flavour::Local => {}
        install::Flavour::Distributed => message.push_str(
            "\nEnterprise Gateway starts it over SSH on its remote hosts: the binary path in kernel.json must exist on each of them (--binary PATH to change it).",
        ),
        install::Flavour::Kubernetes => message.push_str(&format!(
            "\nCopy launch_kubernetes.py and kernel-pod.yaml.j2 from Enterprise Gateway's python_kubernetes kernelspec into {}/scripts/, and set image_name in kernel.json to an image built from container/Containerfile.",
            dir.display()
        )),
    }
    message
}

fn gateway_launch(args: GatewayLaunchArgs) -> ExitCode {
    let settings = match ferrolab_gateway_launcher::LaunchSettings::new(
        args.kernel_id.as_deref(),
        args.response_address.as_deref(),
        args.public_key.as_deref(),
        args.port_range.as_deref(),
        args.spark_context_initialization_mode.as_deref(),
    ) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ferrolab gateway-launch: {error}");
            return ExitCode::from(2);
        }
    };
    match ferrolab::gateway_launch::run(settings, &args.kernel_name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferrolab gateway-launch: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn cache(action: build_cache::Maintenance, json: bool) -> ExitCode {
    let verify = action == build_cache::Maintenance::Verify;
    match build_cache::run(&action, None) {
        Ok(report) => {
            if json {
                println!("{}", report.json);
            } else {
                println!("{}", report.text);
            }
            let problems = report.json["problems"].as_array().map_or(0, Vec::len);
            if verify && problems > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("ferrolab: {error}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<String, install::InstallError>) -> ExitCode {
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ferrolab: {error}");
            ExitCode::FAILURE
        }
    }
}
