//! The IOPub publisher: one thread owns the XPUB socket and sends everything
//! in the order it was queued.
//!
//! Stream text is coalesced by [`StreamBatcher`]; any other message first sends
//! the held stream text, so outputs never overtake each other. `flush` returns
//! once everything queued before it has been handed to the socket, which is how
//! the session makes `idle` follow a cell's last output. Those rules live in
//! [`Outbox`], which hands finished messages to a [`Sink`]: the socket thread
//! in the kernel, a recording in unit tests ([`Publisher::recording`]), so the
//! shell and cell context are tested in-process with the same ordering.
//!
//! Flow control, end to end: a cell's output takes [`OutputBudget`] before it is
//! queued, so a producer faster than the socket waits (see `output_budget`).
//! The socket itself does not drop (`ZMQ_XPUB_NODROP`): when a subscriber's
//! queue is full the thread waits for it, so a slow client slows the producer
//! instead of losing output or growing the kernel. A subscriber that reads
//! nothing for [`STALL`] is given up on: from then on messages it has no room
//! for are dropped for it alone (as a plain PUB socket would), until every
//! subscriber has room again. After an interrupt the same happens at once,
//! until the interrupted cell's output is flushed, so the interrupt is never
//! stuck behind a slow client. Each new subscription gets an `iopub_welcome`
//! (JEP 65; older clients ignore the unknown message type).

use crate::kernel::output_budget::OutputBudget;
use crate::kernel::stream_batch::{StreamBatcher, StreamChunk};
use crate::kernel::transport::{Endpoint, Mailbox, SocketThreads};
use crate::protocol::content::{self, Status};
use crate::protocol::{Codec, Message};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long stream text may be held to batch it with what follows.
pub const STREAM_WINDOW: Duration = Duration::from_millis(50);
/// The largest batch of stream text in one message.
pub const STREAM_MAX_BYTES: usize = 64 * 1024;
/// Cell output queued and not yet handed to the socket, at most.
pub const OUTPUT_BUDGET_BYTES: usize = 2 * 1024 * 1024;
/// Messages libzmq queues per subscriber before the publisher waits.
pub const SEND_HIGH_WATER_MARK: i32 = 64;
/// How long one wait for a full subscriber lasts before checking the clock.
pub const SEND_WAIT_MS: i32 = 100;
/// A subscriber that takes nothing for this long no longer holds the others up.
/// Generous: a client's libzmq reads on only after its app has taken half of
/// its 1,000-message queue, so a slow reader pauses for seconds at a time.
pub const STALL: Duration = Duration::from_secs(5);

pub enum Command {
    Message {
        message: Box<Message>,
        /// Output budget this message holds (0 for kernel messages).
        charge: usize,
    },
    Stream {
        parent: Value,
        name: &'static str,
        text: String,
    },
    Flush(oneshot::Sender<()>),
}

/// A cheap handle for queueing IOPub messages from any thread.
#[derive(Clone)]
pub struct Publisher {
    mailbox: Mailbox<Command>,
    session: Arc<str>,
    budget: Arc<OutputBudget>,
    interrupted: Arc<AtomicBool>,
}

impl Publisher {
    /// Starts the thread that owns the IOPub `socket`.
    pub fn spawn(
        threads: &mut SocketThreads,
        socket: zmq::Socket,
        limit: usize,
        codec: Codec,
        session: Arc<str>,
    ) -> std::io::Result<Publisher> {
        let budget = Arc::new(OutputBudget::new(OUTPUT_BUDGET_BYTES));
        let interrupted = Arc::new(AtomicBool::new(false));
        let iopub = Iopub {
            outbox: Outbox::new(session.clone(), budget.clone(), interrupted.clone()),
            wire: Wire {
                codec,
                interrupted: interrupted.clone(),
                lossy: false,
            },
        };
        let mailbox = threads.spawn("iopub", socket, limit, iopub)?;
        Ok(Publisher {
            mailbox,
            session,
            budget,
            interrupted,
        })
    }

    /// A publisher with no socket (unit tests): each message goes to `record`
    /// on the thread that queued it, after the same batching and ordering as
    /// the IOPub thread applies ([`Outbox`]). Held stream text leaves with the
    /// next command or flush; a window that ended before a command is
    /// honoured as the socket thread's timer would have.
    #[cfg(test)]
    pub fn recording(session: Arc<str>, record: impl FnMut(Message) + Send + 'static) -> Publisher {
        struct Record<F>(F);
        impl<F: FnMut(Message)> Sink for Record<F> {
            fn send(&mut self, message: Message) {
                (self.0)(message)
            }
        }
        let budget = Arc::new(OutputBudget::new(OUTPUT_BUDGET_BYTES));
        let interrupted = Arc::new(AtomicBool::new(false));
        let outbox = Outbox::new(session.clone(), budget.clone(), interrupted.clone());
        let state = std::sync::Mutex::new((outbox, Record(record)));
        let mailbox = Mailbox::from_fn(move |command| {
            let mut state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let (outbox, sink) = &mut *state;
            outbox.on_deadline(sink, Instant::now());
            outbox.command(sink, command);
            true
        });
        Publisher {
            mailbox,
            session,
            budget,
            interrupted,
        }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// Queues a kernel message of `msg_type` with `parent` as its parent
    /// header. Never waits.
    pub fn publish(&self, msg_type: &str, content: Value, parent: &Value) {
        let message = Message::new(msg_type, &self.session, content, parent.clone());
        self.mailbox.send(Command::Message {
            message: Box::new(message),
            charge: 0,
        });
    }

    /// Queues output of the running cell (a display, a clear); waits while
    /// the output budget is spent, unless `give_up` says the cell was
    /// interrupted: then drops it and returns its size as the error. For
    /// blocking threads only.
    pub fn publish_output(
        &self,
        msg_type: &str,
        content: Value,
        parent: &Value,
        give_up: impl Fn() -> bool,
    ) -> Result<(), usize> {
        let charge = serde_json::to_vec(&content).map_or(0, |bytes| bytes.len());
        if !self.budget.take(charge, give_up) {
            return Err(charge);
        }
        let message = Message::new(msg_type, &self.session, content, parent.clone());
        if !self.mailbox.send(Command::Message {
            message: Box::new(message),
            charge,
        }) {
            self.budget.give_back(charge);
        }
        Ok(())
    }

    /// A cell was interrupted: producers waiting for output budget look at
    /// their cell's flag again, and output already queued goes out without
    /// waiting for slow subscribers, until the next flush (the cell's end).
    pub fn interrupted(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.budget.wake_all();
    }

    pub fn status(&self, execution_state: &'static str, parent: &Value) {
        self.publish(
            "status",
            content::to_value(&Status { execution_state }),
            parent,
        );
    }

    /// Queues stream text (batched); waits while the output budget is spent,
    /// unless `give_up` says the cell was interrupted: then returns false and
    /// drops the text. For blocking threads only.
    pub fn stream(
        &self,
        parent: &Value,
        name: &'static str,
        text: &str,
        give_up: impl Fn() -> bool,
    ) -> bool {
        if text.is_empty() {
            return true;
        }
        if !self.budget.take(text.len(), give_up) {
            return false;
        }
        if !self.mailbox.send(Command::Stream {
            parent: parent.clone(),
            name,
            text: text.to_owned(),
        }) {
            self.budget.give_back(text.len());
        }
        true
    }

    /// Waits until everything queued so far was handed to the socket. For
    /// blocking threads only.
    pub fn flush_blocking(&self) {
        let (ack, done) = oneshot::channel();
        if self.mailbox.send(Command::Flush(ack)) {
            let _ = done.blocking_recv();
        }
    }

    /// Async twin of [`flush_blocking`](Self::flush_blocking).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.mailbox.send(Command::Flush(ack)) {
            let _ = done.await;
        }
    }
}

/// Sets `ZMQ_XPUB_NODROP` (the `zmq` crate has no setter for it).
pub fn set_nodrop(socket: &mut zmq::Socket, nodrop: bool) -> zmq::Result<()> {
    let value: libc::c_int = nodrop.into();
    // SAFETY: the socket is open (we hold it) and the option takes one int.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as libc::c_int,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: reads libzmq's thread-local error number.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

/// Where finished IOPub messages go: the socket, or (in tests) a recording.
trait Sink {
    fn send(&mut self, message: Message);
}

/// The publishing rules, whatever the messages go to: stream text is batched;
/// any other message, and a flush, first sends the held text; a message's
/// output budget is given back once it is handed to the sink; a flush clears
/// the interrupt and acknowledges.
struct Outbox {
    session: Arc<str>,
    batcher: StreamBatcher,
    budget: Arc<OutputBudget>,
    /// Set by an interrupt, cleared by the next flush.
    interrupted: Arc<AtomicBool>,
}

impl Outbox {
    fn new(session: Arc<str>, budget: Arc<OutputBudget>, interrupted: Arc<AtomicBool>) -> Self {
        Outbox {
            session,
            batcher: StreamBatcher::new(STREAM_WINDOW, STREAM_MAX_BYTES),
            budget,
            interrupted,
        }
    }

    fn command(&mut self, sink: &mut impl Sink, command: Command) {
        match command {
            Command::Stream { parent, name, text } => {
                for chunk in self.batcher.push(Instant::now(), &parent, name, &text) {
                    self.send_stream(sink, chunk);
                }
            }
            Command::Message { message, charge } => {
                self.flush_streams(sink);
                sink.send(*message);
                self.budget.give_back(charge);
            }
            Command::Flush(ack) => {
                self.flush_streams(sink);
                self.interrupted.store(false, Ordering::SeqCst);
                let _ = ack.send(());
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.batcher.deadline()
    }

    fn on_deadline(&mut self, sink: &mut impl Sink, now: Instant) {
        if let Some(chunk) = self.batcher.poll(now) {
            self.send_stream(sink, chunk);
        }
    }

    fn flush_streams(&mut self, sink: &mut impl Sink) {
        if let Some(chunk) = self.batcher.flush(Instant::now()) {
            self.send_stream(sink, chunk);
        }
    }

    fn send_stream(&mut self, sink: &mut impl Sink, chunk: StreamChunk) {
        let charge = chunk.text.len();
        let content = json!({"name": chunk.name, "text": chunk.text});
        let message = Message::new("stream", &self.session, content, chunk.parent);
        sink.send(message);
        self.budget.give_back(charge);
    }
}

/// The IOPub socket thread's endpoint: the [`Outbox`] rules, sent on the socket.
struct Iopub {
    outbox: Outbox,
    wire: Wire,
}

/// Sending on the XPUB socket: topics, signing, and waiting for subscribers.
struct Wire {
    codec: Codec,
    /// Shared with the [`Outbox`]: after an interrupt nothing waits for room.
    interrupted: Arc<AtomicBool>,
    /// A subscriber stalled: messages it has no room for are dropped for it.
    lossy: bool,
}

/// The wire and the socket it sends on, as a [`Sink`].
struct OnSocket<'a> {
    wire: &'a mut Wire,
    socket: &'a mut zmq::Socket,
}

impl Sink for OnSocket<'_> {
    fn send(&mut self, message: Message) {
        self.wire.send(self.socket, message);
    }
}

impl Endpoint for Iopub {
    type Command = Command;

    /// XPUB delivers subscriptions: `1` + topic subscribes, `0` + topic cancels.
    fn received(&mut self, socket: &mut zmq::Socket, frames: Vec<Bytes>) {
        for frame in frames {
            if frame.first() == Some(&1) {
                let wire = &mut self.wire;
                self.outbox.flush_streams(&mut OnSocket { wire, socket });
                self.wire.welcome(socket, &self.outbox.session, &frame[1..]);
            }
        }
    }

    fn command(&mut self, socket: &mut zmq::Socket, command: Command) {
        let wire = &mut self.wire;
        self.outbox.command(&mut OnSocket { wire, socket }, command);
    }

    fn deadline(&self) -> Option<Instant> {
        self.outbox.deadline()
    }

    fn on_deadline(&mut self, socket: &mut zmq::Socket, now: Instant) {
        let wire = &mut self.wire;
        self.outbox.on_deadline(&mut OnSocket { wire, socket }, now);
    }
}

impl Wire {
    fn send(&mut self, socket: &mut zmq::Socket, mut message: Message) {
        let topic = format!(
            "kernel.{}.{}",
            message.header.session, message.header.msg_type
        );
        message.identities = vec![Bytes::from(topic)];
        let frames = self.codec.encode(&message);
        self.deliver(socket, frames, &message.header.msg_type);
    }

    /// JEP 65: tells a new subscriber it is subscribed, with its topic as the
    /// routing prefix and no parent. The caller sends held stream text first.
    fn welcome(&mut self, socket: &mut zmq::Socket, session: &str, topic: &[u8]) {
        let content = json!({"subscription": String::from_utf8_lossy(topic)});
        let mut message = Message::new("iopub_welcome", session, content, json!({}));
        message.identities = vec![Bytes::copy_from_slice(topic)];
        let frames = self.codec.encode(&message);
        self.deliver(socket, frames, "iopub_welcome");
    }

    /// Sends one message, waiting while a subscriber's queue is full, up to
    /// [`STALL`]; then, and while that lasts, without waiting.
    fn deliver(&mut self, socket: &mut zmq::Socket, frames: Vec<Bytes>, what: &str) {
        let mut frames = frames.into_iter();
        let Some(topic) = frames.next() else { return };
        let rest: Vec<Bytes> = frames.collect();
        let more = if rest.is_empty() { 0 } else { zmq::SNDMORE };
        let started = Instant::now();
        // Only the first frame can find a queue full; libzmq then takes the
        // rest of the message whole.
        let mut first = socket.send(&topic[..], more | zmq::DONTWAIT);
        let mut dropping = false;
        while let Err(zmq::Error::EAGAIN) = first {
            let hurry = self.interrupted.load(Ordering::SeqCst);
            if self.lossy || hurry || started.elapsed() >= STALL {
                if !self.lossy {
                    let why = if hurry {
                        "a cell was interrupted".to_owned()
                    } else {
                        format!("a subscriber has read nothing for {STALL:?}")
                    };
                    log::warn!(
                        "iopub: {why}; output a subscriber has no room for is dropped for it until it reads again"
                    );
                    self.lossy = true;
                }
                dropping = set_nodrop(socket, false).is_ok();
                first = socket.send(&topic[..], more);
                break;
            }
            // Blocks up to the socket's send timeout for room.
            first = socket.send(&topic[..], more);
        }
        if let Err(error) = first {
            log::warn!("iopub: could not send {what}: {error}");
            if dropping {
                let _ = set_nodrop(socket, true);
            }
            return;
        }
        if !dropping && self.lossy {
            log::info!("iopub: every subscriber has room again; nothing is dropped");
            self.lossy = false;
        }
        let last = rest.len().saturating_sub(1);
        for (index, frame) in rest.into_iter().enumerate() {
            let more = if index < last { zmq::SNDMORE } else { 0 };
            if let Err(error) = socket.send(crate::kernel::transport::to_zmq(frame), more) {
                log::warn!("iopub: could not send part of {what}: {error}");
                break;
            }
        }
        if dropping {
            let _ = set_nodrop(socket, true);
        }
    }
}
