//! Publisher-confirm bookkeeping for one channel: sequence numbers out, ack/nack frames back.
//!
//! Pure. Publishes are numbered from 1. A publish is confirmed once every queue it went to has
//! taken it; confirmations are emitted in order, with consecutive acks folded into one
//! `multiple=true` ack, and a nack always sent on its own.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One confirm frame to send: (delivery tag, multiple, ack?).
pub(crate) type ConfirmFrame = (u64, bool, bool);

#[derive(Debug, Default)]
pub(crate) struct ConfirmTracker {
    next: u64,
    confirmed_upto: u64,
    done: BTreeMap<u64, bool>,
    /// Publishes waiting on queues: (queues still to answer, all answered ack so far, since).
    waiting: HashMap<u64, (u32, bool, Instant)>,
}

impl ConfirmTracker {
    pub(crate) fn new() -> Self {
        Self {
            next: 1,
            confirmed_upto: 0,
            done: BTreeMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Number the next publish.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// Record the outcome of a publish.
    pub(crate) fn settle(&mut self, seq: u64, ack: bool) {
        self.done.insert(seq, ack);
    }

    /// A publish that `queues` queues will each confirm (persistent messages in durable queues).
    pub(crate) fn expect(&mut self, seq: u64, queues: u32) {
        self.waiting.insert(seq, (queues, true, Instant::now()));
    }

    /// One queue's answer for a publish; settles it once every queue has answered, and then
    /// returns how long the queues took (the confirm latency).
    pub(crate) fn queue_answered(&mut self, seq: u64, ack: bool) -> Option<Duration> {
        let (remaining, all_ack, since) = self.waiting.get_mut(&seq)?;
        *remaining -= 1;
        *all_ack &= ack;
        if *remaining > 0 {
            return None;
        }
        let (all_ack, since) = (*all_ack, *since);
        self.waiting.remove(&seq);
        self.settle(seq, all_ack);
        Some(since.elapsed())
    }

    /// Whether frames are ready to go out.
    pub(crate) fn has_ready(&self) -> bool {
        self.done.contains_key(&(self.confirmed_upto + 1))
    }

    /// Frames for every settled publish that is next in order.
    pub(crate) fn take_frames(&mut self, out: &mut Vec<ConfirmFrame>) {
        let mut run_end = None;
        while let Some(ack) = self.done.remove(&(self.confirmed_upto + 1)) {
            self.confirmed_upto += 1;
            if ack {
                run_end = Some(self.confirmed_upto);
            } else {
                if let Some(end) = run_end.take() {
                    out.push((end, true, true));
                }
                out.push((self.confirmed_upto, false, false));
            }
        }
        if let Some(end) = run_end {
            out.push((end, true, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_consecutive_acks_and_isolates_nacks() {
        let mut t = ConfirmTracker::new();
        let seqs: Vec<u64> = (0..5).map(|_| t.next_seq()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        t.settle(2, true);
        let mut out = Vec::new();
        t.take_frames(&mut out);
        assert!(out.is_empty(), "1 is still outstanding");
        t.settle(1, true);
        t.settle(3, false);
        t.settle(4, true);
        t.take_frames(&mut out);
        assert_eq!(
            out,
            vec![(2, true, true), (3, false, false), (4, true, true)]
        );
        out.clear();
        t.settle(5, true);
        t.take_frames(&mut out);
        assert_eq!(out, vec![(5, true, true)]);
    }

    #[test]
    fn a_publish_to_several_queues_settles_when_all_answer() {
        let mut t = ConfirmTracker::new();
        let seq = t.next_seq();
        t.expect(seq, 2);
        t.queue_answered(seq, true);
        assert!(!t.has_ready());
        t.queue_answered(seq, false);
        let mut out = Vec::new();
        t.take_frames(&mut out);
        assert_eq!(
            out,
            vec![(1, false, false)],
            "one refusal nacks the publish"
        );
    }
}
