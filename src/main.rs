//! The `ferrolab` command: the kernel itself, and installing its kernelspec.
//!
//! The same binary is also evcxr's runtime child and rustc wrapper, so the
//! first two calls below must stay first.

use clap::{Args, Parser, Subcommand};
use ferrolab::install::{self, Location};
use std::path::PathBuf;
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
    /// Install the kernelspec so Jupyter lists "Rust (ferrolab)".
    Install {
        #[command(flatten)]
        location: LocationArgs,
        /// Kernelspec name (directory under kernels/).
        #[arg(long, default_value = "ferrolab")]
        name: String,
        /// Name shown in the launcher and kernel picker.
        #[arg(long, default_value = "Rust (ferrolab)")]
        display_name: String,
    },
    /// Remove an installed kernelspec.
    Uninstall {
        #[command(flatten)]
        location: LocationArgs,
        #[arg(long, default_value = "ferrolab")]
        name: String,
    },
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

fn main() -> ExitCode {
    ferrolab::engine::relay::enter_if_child();
    evcxr::runtime_hook();
    match Cli::parse().command {
        Command::Kernel {
            connection_file,
            kernel_name,
        } => match ferrolab::run_kernel(&connection_file, &kernel_name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("ferrolab: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Install {
            location,
            name,
            display_name,
        } => report(
            install::install(&location.location(), &name, &display_name)
                .map(|dir| format!("Installed kernelspec {name} in {}", dir.display())),
        ),
        Command::Uninstall { location, name } => report(
            install::uninstall(&location.location(), &name)
                .map(|dir| format!("Removed kernelspec {name} from {}", dir.display())),
        ),
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
