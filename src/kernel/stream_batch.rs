//! Coalesces `stream` output into few IOPub messages without delaying the first.
//!
//! Rules: text that arrives after a quiet period (no stream sent for one window)
//! goes out at once; text that follows closely is held and sent together when the
//! window since the first held byte ends, when the held text grows past
//! `max_bytes`, when the stream or parent changes, or on an explicit flush.
//! Pure and clock-injected so the rules are unit-tested.

use serde_json::Value;
use std::time::{Duration, Instant};

/// One `stream` message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamChunk {
    pub parent: Value,
    pub name: &'static str,
    pub text: String,
}

#[derive(Debug)]
struct Pending {
    chunk: StreamChunk,
    since: Instant,
}

#[derive(Debug)]
pub struct StreamBatcher {
    window: Duration,
    max_bytes: usize,
    pending: Option<Pending>,
    last_sent: Option<Instant>,
}

impl StreamBatcher {
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        StreamBatcher {
            window,
            max_bytes,
            pending: None,
            last_sent: None,
        }
    }

    /// Adds text; returns the chunks to publish now, in order.
    pub fn push(
        &mut self,
        now: Instant,
        parent: &Value,
        name: &'static str,
        text: &str,
    ) -> Vec<StreamChunk> {
        let mut out = Vec::new();
        if text.is_empty() {
            return out;
        }
        if let Some(pending) = &self.pending
            && (pending.chunk.name != name || &pending.chunk.parent != parent)
            && let Some(chunk) = self.take(now)
        {
            out.push(chunk);
        }
        match &mut self.pending {
            Some(pending) => pending.chunk.text.push_str(text),
            None => {
                self.pending = Some(Pending {
                    chunk: StreamChunk {
                        parent: parent.clone(),
                        name,
                        text: text.to_owned(),
                    },
                    since: now,
                })
            }
        }
        let quiet = self
            .last_sent
            .is_none_or(|last| now.duration_since(last) >= self.window);
        let big = self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.chunk.text.len() >= self.max_bytes);
        if (quiet || big)
            && let Some(chunk) = self.take(now)
        {
            out.push(chunk);
        }
        out
    }

    /// When held text must go out, if any is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|pending| pending.since + self.window)
    }

    /// Returns held text if its window has ended.
    pub fn poll(&mut self, now: Instant) -> Option<StreamChunk> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.take(now),
            _ => None,
        }
    }

    /// Returns whatever is held, regardless of the window.
    pub fn flush(&mut self, now: Instant) -> Option<StreamChunk> {
        self.take(now)
    }

    fn take(&mut self, now: Instant) -> Option<StreamChunk> {
        let pending = self.pending.take()?;
        self.last_sent = Some(now);
        Some(pending.chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WINDOW: Duration = Duration::from_millis(50);

    #[test]
    fn first_text_after_quiet_goes_out_at_once() {
        let mut batcher = StreamBatcher::new(WINDOW, 1 << 20);
        let now = Instant::now();
        let out = batcher.push(now, &json!({}), "stdout", "hello\n");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "hello\n");
        assert!(batcher.deadline().is_none());
    }

    #[test]
    fn a_burst_becomes_one_message_per_window() {
        let mut batcher = StreamBatcher::new(WINDOW, 1 << 20);
        let start = Instant::now();
        let mut sent = batcher.push(start, &json!({}), "stdout", "line 0\n");
        for i in 1..2000 {
            let now = start + Duration::from_micros(i * 10);
            sent.extend(batcher.push(now, &json!({}), "stdout", &format!("line {i}\n")));
            if let Some(chunk) = batcher.poll(now) {
                sent.push(chunk);
            }
        }
        sent.extend(batcher.flush(start + Duration::from_millis(30)));
        assert_eq!(sent.len(), 2, "first line at once, the rest together");
        let all: String = sent.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(all.lines().count(), 2000);
    }

    #[test]
    fn held_text_goes_out_when_the_window_ends() {
        let mut batcher = StreamBatcher::new(WINDOW, 1 << 20);
        let start = Instant::now();
        batcher.push(start, &json!({}), "stdout", "a");
        assert!(
            batcher
                .push(start + Duration::from_millis(1), &json!({}), "stdout", "b")
                .is_empty()
        );
        assert!(batcher.poll(start + Duration::from_millis(20)).is_none());
        let chunk = batcher.poll(start + Duration::from_millis(60)).unwrap();
        assert_eq!(chunk.text, "b");
    }

    #[test]
    fn switching_streams_keeps_order() {
        let mut batcher = StreamBatcher::new(WINDOW, 1 << 20);
        let start = Instant::now();
        batcher.push(start, &json!({}), "stdout", "out1");
        batcher.push(start, &json!({}), "stdout", "out2");
        let out = batcher.push(start, &json!({}), "stderr", "err");
        assert_eq!(out[0].name, "stdout");
        assert_eq!(out[0].text, "out2");
        let rest = batcher.flush(start).unwrap();
        assert_eq!((rest.name, rest.text.as_str()), ("stderr", "err"));
    }

    #[test]
    fn large_output_is_sent_before_the_window() {
        let mut batcher = StreamBatcher::new(WINDOW, 10);
        let start = Instant::now();
        batcher.push(start, &json!({}), "stdout", "x");
        let out = batcher.push(start, &json!({}), "stdout", "0123456789");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text.len(), 10);
    }

    #[test]
    fn different_parents_are_not_merged() {
        let mut batcher = StreamBatcher::new(WINDOW, 1 << 20);
        let start = Instant::now();
        batcher.push(start, &json!({"msg_id": "a"}), "stdout", "1");
        batcher.push(start, &json!({"msg_id": "a"}), "stdout", "2");
        let out = batcher.push(start, &json!({"msg_id": "b"}), "stdout", "3");
        assert_eq!(out[0].parent["msg_id"], "a");
    }
}
