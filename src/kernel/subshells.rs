//! Kernel subshells (JEP 91): shells that serve requests concurrently with
//! the main shell, multiplexed on the one shell socket by the header's
//! `subshell_id`.
//!
//! Every request read from the shell socket is handed, in arrival order, to
//! the shell its `subshell_id` names (none or null: the main shell). Each
//! shell is a [`ShellSession`] of its own: requests on one shell run one at a
//! time, shells run side by side. A child subshell has its own execution
//! counter and an in-memory history (JEP 91: "each subshell will store its own
//! execution count and history"); the kernel's history file stays the main
//! shell's record. `kernel_info_request` is answered at once on any shell,
//! never queued behind a cell. A request for a subshell that does not exist is answered
//! with a `SubshellNotFound` error (busy, reply, idle), never run elsewhere.
//! Deleting a subshell lets the cell it runs, and requests already queued for
//! it, finish; later requests for it are refused.

use crate::kernel::history::History;
use crate::kernel::info;
use crate::kernel::requests::{error_reply, send_routed};
use crate::kernel::shell::{ShellParts, ShellSession};
use crate::protocol::Message;
use crate::protocol::content::ErrorInfo;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

type Queue = mpsc::UnboundedSender<Message>;

/// The kernel's child subshells; cheap to clone.
#[derive(Clone)]
pub struct Subshells {
    parts: ShellParts,
    /// In creation order (what `list_subshell_reply` shows).
    children: Arc<Mutex<Vec<(String, Queue)>>>,
}

impl Subshells {
    pub fn new(parts: ShellParts) -> Self {
        Subshells {
            parts,
            children: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(String, Queue)>> {
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the main shell with `history`, and the task that hands every
    /// request from `requests` (the shell socket's queue) to its shell.
    pub fn serve(
        &self,
        mut requests: mpsc::UnboundedReceiver<Message>,
        history: crate::kernel::cell_context::SharedHistory,
    ) {
        let (main, main_queue) = mpsc::unbounded_channel();
        tokio::spawn(ShellSession::new(self.parts.clone(), None, history).run(main_queue));
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let queue = match request.subshell_id() {
                    None => main.clone(),
                    Some(id) => match this.queue_of(id) {
                        Some(queue) => queue,
                        None => {
                            this.refuse(request);
                            continue;
                        }
                    },
                };
                if request.msg_type() == "kernel_info_request" && request.malformed.is_none() {
                    // Depends on nothing a cell changes: answered at once, so a
                    // client connecting while a cell runs (JupyterLab's subshell
                    // console asks before it creates its subshell) is not held up.
                    this.answer_kernel_info(&request);
                    continue;
                }
                if let Err(returned) = queue.send(request) {
                    this.refuse(returned.0);
                }
            }
        });
    }

    fn queue_of(&self, id: &str) -> Option<Queue> {
        self.lock()
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, queue)| queue.clone())
    }

    fn answer_kernel_info(&self, request: &Message) {
        let publisher = &self.parts.publisher;
        publisher.status("busy", &request.raw_header);
        let reply = info::kernel_info(self.parts.interpreter.as_ref());
        let message = request.reply(publisher.session(), reply);
        send_routed(&self.parts.replies, &self.parts.codec, message);
        publisher.status("idle", &request.raw_header);
    }

    /// Starts a child subshell; returns its id.
    pub fn create(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let (queue, requests) = mpsc::unbounded_channel();
        let history = Arc::new(Mutex::new(History::open(None)));
        let session = ShellSession::new(self.parts.clone(), Some(id.clone()), history);
        tokio::spawn(session.run(requests));
        self.lock().push((id.clone(), queue));
        log::info!("subshell {id} created");
        id
    }

    /// Ends a child subshell once what it was given is done.
    pub fn delete(&self, id: &str) -> Result<(), ErrorInfo> {
        let mut children = self.lock();
        let index = children
            .iter()
            .position(|(known, _)| known == id)
            .ok_or_else(|| not_found(id))?;
        children.remove(index);
        log::info!("subshell {id} deleted");
        Ok(())
    }

    /// The child subshells' ids, oldest first.
    pub fn list(&self) -> Vec<String> {
        self.lock().iter().map(|(id, _)| id.clone()).collect()
    }

    /// Answers a request for a subshell that does not exist.
    fn refuse(&self, request: Message) {
        let id = request.subshell_id().unwrap_or_default().to_owned();
        log::info!(
            "shell: {} for subshell {id:?}, which does not exist",
            request.msg_type()
        );
        if !request.msg_type().ends_with("_request") {
            return;
        }
        let publisher = &self.parts.publisher;
        publisher.status("busy", &request.raw_header);
        let mut reply = error_reply(&not_found(&id));
        if request.msg_type() == "execute_request" {
            reply["execution_count"] = 0.into();
        }
        let message = request.reply(publisher.session(), reply);
        send_routed(&self.parts.replies, &self.parts.codec, message);
        publisher.status("idle", &request.raw_header);
    }
}

fn not_found(id: &str) -> ErrorInfo {
    ErrorInfo {
        ename: "SubshellNotFound".into(),
        evalue: format!(
            "this kernel has no subshell {id:?} (it was deleted, or never created); \
             create one with create_subshell_request"
        ),
        traceback: vec![],
    }
}
