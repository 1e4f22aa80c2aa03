//! The socket layer: libzmq sockets, each owned by one thread.
//!
//! libzmq sockets are not thread-safe, so each kernel socket lives on its own
//! thread, which polls the socket and an eventfd. Other threads (tokio tasks,
//! a running cell's helpers) hand it work through a [`Mailbox`], which wakes
//! the thread; what arrives on the socket is given to the socket's
//! [`Endpoint`] on that same thread. (In unit tests a mailbox may instead be
//! a function called on the sender's thread: no socket, no thread.)
//!
//! Invariants:
//! - no frame larger than the message limit is ever buffered: `ZMQ_MAXMSGSIZE`
//!   makes libzmq drop the peer as soon as it reads a frame header announcing
//!   more (so a header claiming 2^62 bytes allocates nothing);
//! - a multipart message whose frames add up to more than the limit, or that
//!   has more than [`MAX_FRAMES`] frames, is read and discarded frame by frame;
//! - a failure to send or receive is logged, never fatal;
//! - [`SocketThreads::close`] gives queued outgoing messages up to
//!   [`LINGER_MS`] to leave before the sockets close.

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

/// Environment variable that sets the largest message (and frame) accepted, in bytes.
pub const MAX_MESSAGE_ENV: &str = "FERROLAB_MAX_MESSAGE_BYTES";
/// The default limit: far above any real Jupyter message, far below harm.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const MIN_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// More frames than this in one message is not Jupyter traffic.
pub const MAX_FRAMES: usize = 4096;
/// How long closing sockets wait for queued outgoing messages.
pub const LINGER_MS: i32 = 1000;
/// Messages read per wake-up before commands get their turn again.
const RECEIVE_BATCH: usize = 64;

/// The message limit from [`MAX_MESSAGE_ENV`], or the default. Accepts a
/// number of bytes with an optional K, M or G suffix (powers of 1024).
pub fn max_message_bytes() -> usize {
    match std::env::var(MAX_MESSAGE_ENV) {
        Ok(value) => match parse_size(&value) {
            Some(bytes) => bytes.max(MIN_MAX_MESSAGE_BYTES),
            None => {
                log::warn!(
                    "{MAX_MESSAGE_ENV}={value:?} is not a size (e.g. 268435456 or 256M); using {DEFAULT_MAX_MESSAGE_BYTES} bytes"
                );
                DEFAULT_MAX_MESSAGE_BYTES
            }
        },
        Err(_) => DEFAULT_MAX_MESSAGE_BYTES,
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((index, _)) => text.split_at(index),
        None => (text, ""),
    };
    let number: usize = digits.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().trim_end_matches("IB") {
        "" | "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// Wakes a socket thread from another thread (an eventfd it polls).
struct Wake {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Wake {
    fn new() -> io::Result<Wake> {
        // SAFETY: eventfd with valid flags; failure is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Wake {
            // SAFETY: eventfd returned a fresh descriptor that nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
        })
    }

    /// Wakes the thread unless a wake-up is already pending.
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            self.signal();
        }
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a u64 to our eventfd.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Called by the socket thread before it looks at its mailbox.
    fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reading 8 bytes into a u64 from our non-blocking eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        self.pending.store(false, Ordering::SeqCst);
    }
}

/// Where any thread leaves work for a socket thread. Cheap to clone.
///
/// In unit tests a mailbox can instead hand each item to a function on the
/// sender's thread ([`Mailbox::from_fn`]): that is how the kernel core runs
/// with no sockets, its outgoing messages recorded in the order sent.
pub struct Mailbox<T> {
    route: Route<T>,
}

enum Route<T> {
    /// Queued for a socket thread, which the eventfd wakes.
    Thread { tx: Sender<T>, wake: Arc<Wake> },
    /// Handed at once to a function (unit tests only).
    #[cfg(test)]
    Call(Arc<dyn Fn(T) -> bool + Send + Sync>),
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        let route = match &self.route {
            Route::Thread { tx, wake } => Route::Thread {
                tx: tx.clone(),
                wake: wake.clone(),
            },
            #[cfg(test)]
            Route::Call(deliver) => Route::Call(deliver.clone()),
        };
        Mailbox { route }
    }
}

impl<T> Mailbox<T> {
    /// Queues `item`; false when the socket thread has ended.
    pub fn send(&self, item: T) -> bool {
        match &self.route {
            Route::Thread { tx, wake } => {
                let sent = tx.send(item).is_ok();
                if sent {
                    wake.notify();
                }
                sent
            }
            #[cfg(test)]
            Route::Call(deliver) => deliver(item),
        }
    }

    /// A mailbox with no socket thread: `deliver` takes each item on the
    /// sending thread, and its answer is what [`send`](Self::send) returns.
    #[cfg(test)]
    pub fn from_fn(deliver: impl Fn(T) -> bool + Send + Sync + 'static) -> Mailbox<T> {
        Mailbox {
            route: Route::Call(Arc::new(deliver)),
        }
    }
}

/// What a socket thread does with its socket.
pub trait Endpoint: Send + 'static {
    /// Work other threads hand to the socket thread.
    type Command: Send + 'static;

    /// A whole message arrived on the socket.
    fn received(&mut self, socket: &mut zmq::Socket, frames: Vec<Bytes>);

    /// Another thread asked for something (usually: send this).
    fn command(&mut self, socket: &mut zmq::Socket, command: Self::Command);

    /// When [`Endpoint::on_deadline`] wants to run next, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn on_deadline(&mut self, _socket: &mut zmq::Socket, _now: Instant) {}
}

/// The running socket threads, for an orderly close at shutdown.
#[derive(Default)]
pub struct SocketThreads {
    threads: Vec<(Arc<AtomicBool>, Arc<Wake>, JoinHandle<()>)>,
}

impl SocketThreads {
    /// Starts the thread that owns `socket`; returns its mailbox.
    pub fn spawn<E: Endpoint>(
        &mut self,
        name: &'static str,
        socket: zmq::Socket,
        limit: usize,
        endpoint: E,
    ) -> io::Result<Mailbox<E::Command>> {
        let wake = Arc::new(Wake::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = {
            let (wake, stop) = (wake.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("ferrolab-{name}"))
                .spawn(move || run(name, socket, limit, endpoint, rx, &wake, &stop))?
        };
        self.threads.push((stop, wake.clone(), thread));
        Ok(Mailbox {
            route: Route::Thread { tx, wake },
        })
    }

    /// Stops every socket thread; each closes its socket, and queued
    /// outgoing messages get up to [`LINGER_MS`] to leave.
    pub fn close(self) {
        for (stop, wake, _) in &self.threads {
            stop.store(true, Ordering::SeqCst);
            wake.signal();
        }
        for (_, _, thread) in self.threads {
            let _ = thread.join();
        }
    }
}

fn run<E: Endpoint>(
    name: &'static str,
    mut socket: zmq::Socket,
    limit: usize,
    mut endpoint: E,
    commands: Receiver<E::Command>,
    wake: &Wake,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let timeout = endpoint.deadline().map_or(-1, |deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up: waking early would spin until the deadline.
            left.as_micros().div_ceil(1000) as i64
        });
        let (readable, woken) = {
            let mut items = [
                socket.as_poll_item(zmq::POLLIN),
                zmq::PollItem::from_fd(wake.fd.as_raw_fd(), zmq::POLLIN),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) => (items[0].is_readable(), items[1].is_readable()),
                Err(zmq::Error::EINTR) => continue,
                Err(error) => {
                    log::warn!("{name}: poll failed: {error}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            }
        };
        if woken {
            wake.clear();
            while let Ok(command) = commands.try_recv() {
                endpoint.command(&mut socket, command);
            }
        }
        if readable {
            for _ in 0..RECEIVE_BATCH {
                match receive(&socket, limit) {
                    Ok(Received::Message(frames)) => endpoint.received(&mut socket, frames),
                    Ok(Received::Refused { bytes, frames }) => log::warn!(
                        "{name}: refused a message of {frames} frames and at least {bytes} bytes (limit {limit} bytes, {MAX_FRAMES} frames; set {MAX_MESSAGE_ENV} to change it)"
                    ),
                    Err(zmq::Error::EAGAIN) => break,
                    Err(zmq::Error::EINTR) => continue,
                    Err(error) => {
                        log::warn!("{name}: receive failed: {error}");
                        break;
                    }
                }
            }
        }
        if endpoint
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            endpoint.on_deadline(&mut socket, Instant::now());
        }
    }
    // Dropping the socket closes it; libzmq keeps sending what is queued for
    // up to its linger time.
    drop(socket);
}

/// One read from a socket.
enum Received {
    Message(Vec<Bytes>),
    /// Over the size or frame limit: read to its end and dropped.
    Refused {
        bytes: usize,
        frames: usize,
    },
}

/// Reads one whole message without blocking (`EAGAIN` when there is none).
/// libzmq hands over multipart messages atomically, so once the first frame
/// is read the rest are there.
fn receive(socket: &zmq::Socket, limit: usize) -> Result<Received, zmq::Error> {
    let mut frames = Vec::new();
    let mut bytes = 0usize;
    let mut count = 0usize;
    let mut refused = false;
    let mut flags = zmq::DONTWAIT;
    loop {
        let message = socket.recv_msg(flags)?;
        flags = 0;
        count += 1;
        bytes = bytes.saturating_add(message.len());
        let more = message.get_more();
        if bytes > limit || count > MAX_FRAMES {
            refused = true;
            frames.clear();
        } else {
            frames.push(Bytes::from_owner(Frame(message)));
        }
        if !more {
            break;
        }
    }
    Ok(if refused {
        Received::Refused {
            bytes,
            frames: count,
        }
    } else {
        Received::Message(frames)
    })
}

/// A received libzmq frame, shared without copying.
struct Frame(zmq::Message);

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Sends a multipart message; `flags` applies to every frame.
pub fn send_frames(socket: &zmq::Socket, frames: Vec<Bytes>, flags: i32) -> zmq::Result<()> {
    let last = frames.len().saturating_sub(1);
    for (index, frame) in frames.into_iter().enumerate() {
        let more = if index < last { zmq::SNDMORE } else { 0 };
        socket.send(to_zmq(frame), flags | more)?;
    }
    Ok(())
}

/// Large frames are handed to libzmq without a copy.
pub fn to_zmq(frame: Bytes) -> zmq::Message {
    if frame.len() < 4096 {
        zmq::Message::from(&frame[..])
    } else {
        zmq::Message::from(Vec::<u8>::from(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size(" 2 g "), Some(2 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12T"), None);
        assert_eq!(parse_size(""), None);
    }

    fn pair() -> (zmq::Socket, zmq::Socket) {
        let context = zmq::Context::new();
        let endpoint = format!("inproc://transport-test-{}", uuid::Uuid::new_v4());
        let server = context.socket(zmq::PULL).unwrap();
        server.bind(&endpoint).unwrap();
        let client = context.socket(zmq::PUSH).unwrap();
        client.connect(&endpoint).unwrap();
        (server, client)
    }

    fn receive_blocking(socket: &zmq::Socket, limit: usize) -> Received {
        socket.poll(zmq::POLLIN, 5000).unwrap();
        receive(socket, limit).unwrap()
    }

    #[test]
    fn messages_over_the_limit_are_refused_and_the_next_one_arrives() {
        let (server, client) = pair();
        send_frames(
            &client,
            vec![Bytes::from(vec![1u8; 60]), Bytes::from(vec![2u8; 60])],
            0,
        )
        .unwrap();
        send_frames(&client, vec![Bytes::from_static(b"ok")], 0).unwrap();
        match receive_blocking(&server, 100) {
            Received::Refused { bytes, frames } => assert_eq!((bytes, frames), (120, 2)),
            Received::Message(_) => panic!("120 bytes passed a 100-byte limit"),
        }
        match receive_blocking(&server, 100) {
            Received::Message(frames) => assert_eq!(frames, [Bytes::from_static(b"ok")]),
            Received::Refused { .. } => panic!("a small message was refused"),
        }
    }

    #[test]
    fn too_many_frames_are_refused() {
        let (server, client) = pair();
        let frames = vec![Bytes::new(); MAX_FRAMES + 1];
        send_frames(&client, frames, 0).unwrap();
        assert!(matches!(
            receive_blocking(&server, usize::MAX),
            Received::Refused { frames, .. } if frames == MAX_FRAMES + 1
        ));
    }

    #[test]
    fn frames_round_trip_large_and_small() {
        let (server, client) = pair();
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let sent = vec![Bytes::from_static(b"a"), Bytes::new(), big.clone()];
        send_frames(&client, sent.clone(), 0).unwrap();
        match receive_blocking(&server, usize::MAX) {
            Received::Message(frames) => assert_eq!(frames, sent),
            Received::Refused { .. } => panic!("refused"),
        }
    }

    #[test]
    fn a_mailbox_wakes_its_thread_and_commands_arrive_in_order() {
        struct Collect(Sender<u32>);
        impl Endpoint for Collect {
            type Command = u32;
            fn received(&mut self, _: &mut zmq::Socket, _: Vec<Bytes>) {}
            fn command(&mut self, _: &mut zmq::Socket, command: u32) {
                let _ = self.0.send(command);
            }
        }
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PULL).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut threads = SocketThreads::default();
        let mailbox = threads.spawn("test", socket, 1024, Collect(tx)).unwrap();
        for i in 0..1000 {
            assert!(mailbox.send(i));
        }
        let got: Vec<u32> = (0..1000)
            .map(|_| rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        threads.close();
    }
}
