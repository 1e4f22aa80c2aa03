//! The spare process (`ferrolab spare serve`): starts a kernel's engine at
//! once, waits for a launcher on its socket, then becomes that kernel.
//!
//! Invariants: the spare holds the per-user lock from before its engine
//! starts until it is adopted or ends, and its socket exists only while it
//! can adopt; after adopting, it removes both, so the next spare can start
//! while this kernel runs. Everything written to its stderr (the log, cargo's
//! messages) goes nowhere until adoption, then to the launcher's stderr.

use super::wire::{self, Answer, Request};
use super::{Key, Settings, process_env, volatile_changes};
use crate::cells::Router;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a spare waits for an old one (another environment's) to retire.
const RETIRE_WAIT: Duration = Duration::from_secs(30);

/// Starts a spare for this kernel's environment in the background, detached
/// from this process (its own session, and not a child: `ferrolab spare
/// start` starts it and exits). Does nothing when spares are off or memory
/// is short.
pub fn spawn_detached(kernel_name: &str) {
    let settings = Settings::from_env();
    if !settings.enabled || !memory_allows(&settings) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = Command::new(exe);
    command
        .env_clear()
        .envs(super::launch_env())
        .args(["spare", "start", "--kernel-name", kernel_name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match command.spawn() {
        Ok(mut child) => {
            // It exits as soon as the spare is started.
            std::thread::spawn(move || child.wait());
            log::info!("starting a warm spare kernel for the next start");
        }
        Err(error) => log::warn!("could not start a warm spare kernel: {error}"),
    }
}

/// `ferrolab spare start`: starts `ferrolab spare serve` in a session of its
/// own and returns at once.
pub fn start(kernel_name: &str) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        return ExitCode::FAILURE;
    };
    let mut command = Command::new(exe);
    command
        .args(["spare", "serve", "--kernel-name", kernel_name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match command.spawn() {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn memory_allows(settings: &Settings) -> bool {
    if settings.min_free_bytes == 0 {
        return true;
    }
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let available = system.available_memory();
    if available < settings.min_free_bytes {
        log::info!(
            "no warm spare: {} MiB available, FERROLAB_SPARE_MIN_FREE_MB asks for {}",
            available / (1024 * 1024),
            settings.min_free_bytes / (1024 * 1024)
        );
        return false;
    }
    true
}

/// The per-user lock, held while this process is the spare.
struct Lock {
    file: File,
    holder: PathBuf,
}

impl Lock {
    fn try_take(settings: &Settings) -> std::io::Result<Option<Lock>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(settings.lock_file())?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Ok(None);
        }
        Ok(Some(Lock {
            file,
            holder: settings.holder_file(),
        }))
    }

    fn release(self) {
        let _ = std::fs::remove_file(&self.holder);
        // SAFETY: unlocking a descriptor we own.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The key of the spare that holds the lock, as it wrote it.
fn holder_key(settings: &Settings) -> Option<String> {
    std::fs::read_to_string(settings.holder_file())
        .ok()
        .map(|text| text.trim().to_owned())
}

/// Sends `request` to the spare listening on `socket`; its answer.
pub fn ask(socket: &Path, request: &Request) -> std::io::Result<Option<Answer>> {
    let mut stream = UnixStream::connect(socket)?;
    wire::check_peer(&stream)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    wire::send_fds(&stream, &[])?;
    wire::send(&mut stream, request)?;
    wire::receive(&mut BufReader::new(stream))
}

/// The socket of the spare that holds the lock now, if any.
pub fn current_socket(settings: &Settings) -> Option<PathBuf> {
    holder_key(settings)
        .filter(|key| !key.is_empty())
        .map(|key| settings.socket(&key))
}

/// Takes the lock, retiring a spare of another environment first.
fn take_lock(settings: &Settings, key: &Key) -> Option<Lock> {
    if let Ok(Some(lock)) = Lock::try_take(settings) {
        return Some(lock);
    }
    if holder_key(settings).as_deref() == Some(key.as_str()) {
        // A spare for this environment runs or is starting.
        return None;
    }
    if let Some(socket) = current_socket(settings) {
        let _ = ask(&socket, &Request::Retire);
    }
    let deadline = Instant::now() + RETIRE_WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(lock)) = Lock::try_take(settings) {
            return Some(lock);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Where fd 2's writes go: nowhere until adoption, then the launcher's stderr.
#[derive(Clone, Default)]
struct StderrTarget(Arc<Mutex<Option<File>>>);

impl StderrTarget {
    /// Puts a pipe on fd 2 whose reader forwards to the target.
    fn capture(&self) -> std::io::Result<()> {
        let (read_end, write_end) = crate::os::fds::pipe()?;
        crate::os::fds::replace_standard_fd(&write_end, 2)?;
        let target = self.0.clone();
        std::thread::Builder::new()
            .name("ferrolab-spare-stderr".into())
            .spawn(move || {
                let mut reader = File::from(read_end);
                let mut buffer = [0u8; 8192];
                while let Ok(n) = reader.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if let Some(file) = target.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                        let _ = file.write_all(&buffer[..n]);
                    }
                }
            })?;
        Ok(())
    }

    fn set(&self, file: File) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
    }
}

/// `ferrolab spare serve`: the spare's whole life.
pub fn serve(kernel_name: &str) -> ExitCode {
    let settings = Settings::from_env();
    if !settings.enabled || settings.private_dir().is_err() || !memory_allows(&settings) {
        return ExitCode::SUCCESS;
    }
    let key = Key::of_this_process(kernel_name);
    let Some(lock) = take_lock(&settings, &key) else {
        return ExitCode::SUCCESS;
    };
    let _ = std::fs::write(settings.holder_file(), key.as_str());
    let stderr = StderrTarget::default();
    if stderr.capture().is_err() {
        lock.release();
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let router = crate::prepare_router(kernel_name);
    crate::kernel::Interpreter::start(router.as_ref());
    let preloader = super::preload::Preloader::new();
    preloader.watch(router.clone(), &settings, &key);

    let socket = settings.socket(key.as_str());
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(error) => {
            log::warn!("spare: cannot listen on {}: {error}", socket.display());
            crate::kernel::Interpreter::shutdown(router.as_ref());
            lock.release();
            return ExitCode::FAILURE;
        }
    };
    let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
    let adopted = Arc::new(AtomicBool::new(false));
    let timer_socket = socket.clone();
    let timer_adopted = adopted.clone();
    let idle = settings.idle;
    std::thread::spawn(move || {
        std::thread::sleep(idle);
        // Once adopted, the socket may be the next spare's.
        if !timer_adopted.load(Ordering::SeqCst) {
            let _ = ask(&timer_socket, &Request::Retire);
        }
    });

    let (stream, adoption) = loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        if wire::check_peer(&stream).is_err() {
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(fds) = wire::receive_fds(&stream, 3) else {
            continue;
        };
        let Ok(reader) = stream.try_clone() else {
            continue;
        };
        let request = match wire::receive::<Request>(&mut BufReader::new(reader)) {
            Ok(Some(request)) => request,
            _ => continue,
        };
        match request {
            Request::Status => {
                let _ = wire::send(
                    &mut stream,
                    &Answer::Status {
                        pid: std::process::id(),
                        key: key.as_str().to_owned(),
                        ready: router.engine_ready(),
                        age_s: started.elapsed().as_secs(),
                        loaded: preloader.loaded(),
                    },
                );
            }
            Request::Retire => {
                let _ = std::fs::remove_file(&socket);
                let _ = wire::send(&mut stream, &Answer::Retiring);
                crate::kernel::Interpreter::shutdown(router.as_ref());
                lock.release();
                return ExitCode::SUCCESS;
            }
            Request::Adopt {
                connection_file,
                cwd,
                env,
                key: theirs,
            } => {
                let refusal = if theirs != key.as_str() || Key::new(kernel_name, &env) != key {
                    Some("its environment differs from the spare's".to_owned())
                } else if fds.len() != 3 {
                    Some("the standard streams did not arrive".to_owned())
                } else if !cwd.is_dir() {
                    Some(format!("{} is not a directory", cwd.display()))
                } else {
                    None
                };
                if let Some(reason) = refusal {
                    let _ = wire::send(&mut stream, &Answer::Refused { reason });
                    continue;
                }
                break (
                    stream,
                    Adoption {
                        connection_file,
                        cwd,
                        env,
                        fds,
                        stderr,
                    },
                );
            }
        }
    };
    // From here on this process is that kernel: the next spare may start.
    adopted.store(true, Ordering::SeqCst);
    let _ = std::fs::remove_file(&socket);
    drop(listener);
    lock.release();
    become_kernel(&router, kernel_name, stream, adoption, &preloader)
}

struct Adoption {
    connection_file: PathBuf,
    cwd: PathBuf,
    env: std::collections::BTreeMap<String, String>,
    fds: Vec<OwnedFd>,
    stderr: StderrTarget,
}

fn become_kernel(
    router: &Arc<Router>,
    kernel_name: &str,
    mut stream: UnixStream,
    adoption: Adoption,
    preloader: &super::preload::Preloader,
) -> ExitCode {
    let Adoption {
        connection_file,
        cwd,
        env,
        mut fds,
        stderr,
    } = adoption;
    let _ = stream.set_read_timeout(None);
    let launcher_stderr = fds.pop().map(File::from);
    for (fd, target) in fds.iter().zip([0, 1]) {
        let _ = crate::os::fds::replace_standard_fd(fd, target);
    }
    if let Some(file) = launcher_stderr {
        stderr.set(file);
    }
    let changes = volatile_changes(&process_env(), &env);
    let notebook = super::preload::notebook_of(&env);
    super::set_launch_env(env);
    if let Err(error) = router.adopt(&cwd, &changes) {
        log::warn!("spare: the kernel could not take the launch's directory or variables: {error}");
    }
    if wire::send(
        &mut stream,
        &Answer::Adopted {
            pid: std::process::id(),
        },
    )
    .is_err()
    {
        // The launcher is gone already; it will start a kernel itself.
        crate::kernel::Interpreter::shutdown(router.as_ref());
        return ExitCode::FAILURE;
    }
    log::info!(
        "adopted by a launcher for {} in {}",
        connection_file.display(),
        cwd.display()
    );
    let finishing = Arc::new(AtomicBool::new(false));
    watch_launcher(&stream, router.clone(), finishing.clone());
    // Crates loaded for another notebook are cleared before its first cell.
    preloader.adopted_by(router, &notebook);
    crate::serve_as_kernel_of(router, kernel_name);
    let interpreter: Arc<dyn crate::kernel::Interpreter> = router.clone();
    let code = match crate::kernel::serve(&connection_file, interpreter) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("ferrolab: {error:#}");
            1
        }
    };
    finishing.store(true, Ordering::SeqCst);
    let _ = wire::send(&mut stream, &Answer::Exited { code });
    ExitCode::from(code as u8)
}

/// Ends this kernel when its launcher goes (killed: Jupyter's SIGKILL to the
/// launcher's group must not leave the kernel running).
fn watch_launcher(stream: &UnixStream, router: Arc<Router>, finishing: Arc<AtomicBool>) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while matches!(reader.read(&mut buffer), Ok(n) if n > 0) {}
        if finishing.load(Ordering::SeqCst) {
            return;
        }
        log::info!("the launcher is gone: ending this kernel");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            crate::kernel::Interpreter::shutdown(router.as_ref());
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv_timeout(Duration::from_secs(3));
        std::process::exit(1);
    });
}
