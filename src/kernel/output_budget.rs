//! Backpressure for cell output: a byte budget shared by every producer.
//!
//! A cell's output (stream text, displays) takes budget before it is queued
//! for IOPub and gives it back once the IOPub thread has handed it to the
//! socket. A producer that finds the budget spent waits, and so does whatever
//! feeds it: a shell command blocks writing its pipe, the Rust runtime blocks
//! in `println!`. So the kernel holds at most the budget (plus one item that
//! alone is larger) however fast output is made, and output keeps its order
//! because nothing is dropped.
//!
//! Kernel messages (status, replies' side effects) never wait here: they must
//! go out even while output is stuck behind a slow client. A producer whose
//! cell was interrupted stops waiting ([`OutputBudget::wake_all`]): what it
//! cannot queue at once is dropped, so an interrupt is never stuck behind a
//! flood.

use std::sync::{Condvar, Mutex};

pub struct OutputBudget {
    capacity: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl OutputBudget {
    pub fn new(capacity: usize) -> Self {
        OutputBudget {
            capacity,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Takes `bytes` of budget, waiting while it is spent; returns false
    /// (taking nothing) once `give_up` says so. An item larger than the whole
    /// budget goes when nothing else is queued.
    pub fn take(&self, bytes: usize, give_up: impl Fn() -> bool) -> bool {
        let mut used = self.lock();
        while *used > 0 && used.saturating_add(bytes) > self.capacity {
            if give_up() {
                return false;
            }
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *used += bytes;
        true
    }

    /// Makes every waiting producer look at its `give_up` again.
    pub fn wake_all(&self) {
        let _guard = self.lock();
        self.freed.notify_all();
    }

    /// Gives `bytes` back (what was sent).
    pub fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut used = self.lock();
        *used = used.saturating_sub(bytes);
        drop(used);
        self.freed.notify_all();
    }

    /// Bytes queued and not yet sent.
    pub fn in_use(&self) -> usize {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_waiting_producer_goes_on_when_budget_is_given_back() {
        let budget = Arc::new(OutputBudget::new(100));
        assert!(budget.take(80, || false));
        let producer = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.take(50, || false))
        };
        budget.give_back(80);
        assert!(producer.join().unwrap());
        assert_eq!(budget.in_use(), 50);
    }

    #[test]
    fn a_producer_that_gives_up_takes_nothing() {
        let budget = Arc::new(OutputBudget::new(100));
        assert!(budget.take(100, || false));
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let (budget, interrupted) = (budget.clone(), interrupted.clone());
            std::thread::spawn(move || budget.take(10, || interrupted.load(Ordering::SeqCst)))
        };
        interrupted.store(true, Ordering::SeqCst);
        budget.wake_all();
        assert!(!producer.join().unwrap(), "took budget after giving up");
        assert_eq!(budget.in_use(), 100);
        // With room, even an interrupted producer queues (a last short line).
        budget.give_back(100);
        assert!(budget.take(10, || true));
    }

    #[test]
    fn an_item_larger_than_the_budget_goes_alone() {
        let budget = OutputBudget::new(10);
        assert!(budget.take(1000, || false));
        assert_eq!(budget.in_use(), 1000);
        budget.give_back(1000);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn many_producers_never_exceed_the_budget_by_more_than_one_item() {
        let budget = Arc::new(OutputBudget::new(1000));
        let peak = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let (budget, peak) = (budget.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        assert!(budget.take(100, || false));
                        peak.fetch_max(budget.in_use(), Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let consumer = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let mut given = 0;
                while given < 4 * 2000 * 100 {
                    if budget.in_use() >= 100 {
                        budget.give_back(100);
                        given += 100;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        for producer in producers {
            producer.join().unwrap();
        }
        consumer.join().unwrap();
        assert!(peak.load(Ordering::SeqCst) <= 1000);
        assert_eq!(budget.in_use(), 0);
    }
}
