//! Ready messages, in a few bytes each when they are deep in a queue: a stretch of paged
//! messages with consecutive sequence numbers, never delivered and never expiring, is one
//! [`Run`] holding only their body sizes (none at all when they are the same).
//!
//! Invariants: items of a level are disjoint and sorted by sequence number; a run holds
//! `count >= 1` messages numbered `first..first + count`, all of its level's priority, all
//! `Slot::Paged` with the same `scratch`; a run only ever loses messages at its front (a
//! requeued message is never inside a run: a run's messages are all ready).

use std::collections::VecDeque;

use super::{Entry, Slot, NEVER};

/// Body sizes of a run's messages.
#[derive(Debug, Clone)]
enum Lens {
    /// All the same.
    Same(u32),
    /// One each, front first.
    Each(VecDeque<u16>),
}

/// Paged messages with consecutive sequence numbers.
#[derive(Debug, Clone)]
pub(super) struct Run {
    first: u64,
    count: u32,
    scratch: bool,
    priority: u8,
    lens: Lens,
}

impl Run {
    fn new(seq: u64, body_len: u32, scratch: bool, priority: u8) -> Self {
        Self {
            first: seq,
            count: 1,
            scratch,
            priority,
            lens: Lens::Same(body_len),
        }
    }

    fn end(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    /// Take `entry` on at the end if it continues this run.
    fn extend(&mut self, seq: u64, body_len: u32, scratch: bool) -> bool {
        if seq != self.end() || scratch != self.scratch || self.count == u32::MAX {
            return false;
        }
        match &mut self.lens {
            Lens::Same(len) if *len == body_len => {}
            Lens::Same(len) => {
                let (Ok(old), Ok(new)) = (u16::try_from(*len), u16::try_from(body_len)) else {
                    return false;
                };
                let mut each: VecDeque<u16> =
                    std::iter::repeat_n(old, self.count as usize).collect();
                each.push_back(new);
                self.lens = Lens::Each(each);
            }
            Lens::Each(each) => match u16::try_from(body_len) {
                Ok(new) => each.push_back(new),
                Err(_) => return false,
            },
        }
        self.count += 1;
        true
    }

    fn entry(&self, seq: u64, body_len: u32) -> Entry {
        Entry {
            seq,
            message: Slot::Paged {
                body_len,
                scratch: self.scratch,
            },
            expires_at: NEVER,
            deliveries: 0,
            priority: self.priority,
            redelivered: false,
        }
    }

    /// Take the first message off.
    fn pop_front(&mut self) -> Entry {
        let body_len = match &mut self.lens {
            Lens::Same(len) => *len,
            Lens::Each(each) => each.pop_front().map_or(0, u32::from),
        };
        let entry = self.entry(self.first, body_len);
        self.first += 1;
        self.count -= 1;
        entry
    }

    /// Body bytes of its messages.
    fn body_bytes(&self) -> u64 {
        match &self.lens {
            Lens::Same(len) => u64::from(*len) * u64::from(self.count),
            Lens::Each(each) => each.iter().map(|l| u64::from(*l)).sum(),
        }
    }

    /// Every message, in order.
    fn into_entries(mut self) -> impl Iterator<Item = Entry> {
        let lens = std::mem::replace(&mut self.lens, Lens::Same(0));
        let lens: Box<dyn Iterator<Item = u32>> = match lens {
            Lens::Same(len) => Box::new(std::iter::repeat_n(len, self.count as usize)),
            Lens::Each(each) => Box::new(each.into_iter().map(u32::from)),
        };
        (self.first..self.end())
            .zip(lens)
            .map(move |(seq, len)| self.entry(seq, len))
    }
}

/// A single message, or a run of them.
#[derive(Debug, Clone)]
pub(super) enum Item {
    One(Entry),
    Run(Run),
}

impl Item {
    fn first(&self) -> u64 {
        match self {
            Self::One(e) => e.seq,
            Self::Run(r) => r.first,
        }
    }

    fn expires_at(&self) -> u64 {
        match self {
            Self::One(e) => e.expires_at,
            Self::Run(_) => NEVER,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Run(r) => r.count as usize,
        }
    }
}

/// Whether an entry can be part of a run: what a run leaves out is what it has.
fn runnable(entry: &Entry) -> Option<(u32, bool)> {
    match entry.message {
        Slot::Paged { body_len, scratch }
            if entry.expires_at == NEVER && entry.deliveries == 0 && !entry.redelivered =>
        {
            Some((body_len, scratch))
        }
        Slot::Paged { .. } | Slot::Resident(_) => None,
    }
}

/// Items in sequence order, appended at the back.
#[derive(Debug, Default)]
pub(super) struct Items {
    items: VecDeque<Item>,
}

impl Items {
    fn push_back(&mut self, entry: Entry) {
        if let Some((body_len, scratch)) = runnable(&entry) {
            if let Some(Item::Run(run)) = self.items.back_mut() {
                if run.priority == entry.priority && run.extend(entry.seq, body_len, scratch) {
                    return;
                }
            }
            self.items.push_back(Item::Run(Run::new(
                entry.seq,
                body_len,
                scratch,
                entry.priority,
            )));
        } else {
            self.items.push_back(Item::One(entry));
        }
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = match self.items.front_mut()? {
            Item::One(_) => match self.items.pop_front() {
                Some(Item::One(e)) => return Some(e),
                Some(Item::Run(_)) | None => return None,
            },
            Item::Run(run) => run.pop_front(),
        };
        if matches!(self.items.front(), Some(Item::Run(r)) if r.count == 0) {
            self.items.pop_front();
        }
        // A drained deep queue gives its memory back as it goes (amortized: each shrink
        // halves what the last growth doubled).
        if self.items.capacity() > 4096 && self.items.len() < self.items.capacity() / 4 {
            self.items.shrink_to(self.items.len() * 2);
        }
        Some(entry)
    }

    /// Put an entry back at its place by sequence number.
    fn insert(&mut self, entry: Entry) {
        let at = self.items.partition_point(|i| i.first() < entry.seq);
        self.items.insert(at, Item::One(entry));
    }

    fn front_expiry(&self) -> Option<u64> {
        self.items.front().map(Item::expires_at)
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How often the ready message `seq` has been delivered.
    fn deliveries_of(&self, seq: u64) -> Option<u32> {
        let at = self.items.partition_point(|i| i.first() <= seq);
        match self.items.get(at.checked_sub(1)?)? {
            Item::One(e) => (e.seq == seq).then_some(e.deliveries),
            Item::Run(r) => (seq < r.end()).then_some(0),
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.items
            .drain(..)
            .flat_map(|item| -> Box<dyn Iterator<Item = Entry>> {
                match item {
                    Item::One(e) => Box::new(std::iter::once(e)),
                    Item::Run(r) => Box::new(r.into_entries()),
                }
            })
    }
}

/// Messages brought back at start, in sequence order, gathered one at a time: a deep queue's
/// messages never all exist as entries at once.
#[derive(Debug, Default)]
pub struct Backlog {
    items: Items,
    len: usize,
    last_seq: Option<u64>,
}

impl Backlog {
    /// No messages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a message after every one added before (a higher sequence number).
    pub fn push(&mut self, entry: Entry) {
        self.last_seq = Some(entry.seq);
        self.len += 1;
        self.items.push_back(entry);
    }

    /// Add every message of `later`, whose numbers are all above this one's.
    pub fn append(&mut self, later: Backlog) {
        self.len += later.len;
        self.last_seq = later.last_seq.or(self.last_seq);
        self.items.items.extend(later.items.items);
    }

    /// Number the queue's next message above `seq` (the highest stored, whether or not it
    /// could be brought back): a number still in the store is never given out again.
    pub fn continue_after(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(Some(seq));
    }

    /// Messages added.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Ready messages: one FIFO per priority level, each sorted by sequence number.
#[derive(Debug)]
pub(super) struct Ready {
    levels: Vec<Items>,
    pub(super) len: usize,
}

impl Ready {
    pub(super) fn new(max_priority: Option<u8>) -> Self {
        let n = max_priority.map_or(1, |p| usize::from(p) + 1);
        Self {
            levels: (0..n).map(|_| Items::default()).collect(),
            len: 0,
        }
    }

    /// The ready messages of a backlog, with their body bytes (total, resident), and the
    /// sequence number after the last.
    pub(super) fn from_backlog(
        max_priority: Option<u8>,
        backlog: Backlog,
    ) -> (Self, u64, u64, Option<u64>) {
        let mut ready = Self::new(max_priority);
        let (mut bytes, mut resident) = (0, 0);
        let single = ready.levels.len() == 1;
        for item in backlog.items.items {
            match item {
                Item::One(e) => {
                    bytes += e.message.body_len();
                    resident += e.message.resident_len();
                    ready.push_back(e);
                }
                Item::Run(run) if single => {
                    bytes += run.body_bytes();
                    ready.len += run.count as usize;
                    if let Some(level) = ready.levels.first_mut() {
                        level.items.push_back(Item::Run(run));
                    }
                }
                Item::Run(run) => {
                    for e in run.into_entries() {
                        bytes += e.message.body_len();
                        ready.push_back(e);
                    }
                }
            }
        }
        (ready, bytes, resident, backlog.last_seq)
    }

    fn level(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len().saturating_sub(1))
    }

    pub(super) fn push_back(&mut self, entry: Entry) {
        let l = self.level(entry.priority);
        if let Some(level) = self.levels.get_mut(l) {
            level.push_back(entry);
            self.len += 1;
        }
    }

    /// Put an entry back at its place by sequence (usually the front: requeued messages are
    /// older than anything still ready).
    pub(super) fn insert(&mut self, entry: Entry) {
        let l = self.level(entry.priority);
        if let Some(level) = self.levels.get_mut(l) {
            level.insert(entry);
            self.len += 1;
        }
    }

    /// The next message to deliver: the oldest of the highest non-empty level.
    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        let level = self.levels.iter_mut().rev().find(|l| !l.is_empty())?;
        let entry = level.pop_front()?;
        self.len -= 1;
        Some(entry)
    }

    /// Take the head of some level if it expires before `bound`.
    pub(super) fn pop_expired(&mut self, bound: u64) -> Option<Entry> {
        let level = self
            .levels
            .iter_mut()
            .find(|l| l.front_expiry().is_some_and(|e| e < bound))?;
        let entry = level.pop_front()?;
        self.len -= 1;
        Some(entry)
    }

    pub(super) fn next_expiry(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter_map(Items::front_expiry)
            .filter(|e| *e != NEVER)
            .min()
    }

    pub(super) fn deliveries_of(&self, seq: u64) -> Option<u32> {
        self.levels.iter().find_map(|l| l.deliveries_of(seq))
    }

    pub(super) fn drain(&mut self) -> Vec<Entry> {
        self.len = 0;
        let mut all: Vec<Entry> = self.levels.iter_mut().flat_map(Items::drain).collect();
        all.sort_by_key(|e| e.seq);
        all
    }

    /// Items held (a run counts once), for tests of the memory a deep queue costs.
    #[cfg(test)]
    pub(super) fn items(&self) -> usize {
        self.levels.iter().map(|l| l.items.len()).sum()
    }

    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut n = 0;
        for level in &self.levels {
            let mut last = None;
            for item in &level.items {
                assert!(item.len() >= 1);
                assert!(last.is_none_or(|l| l < item.first()), "out of order");
                last = Some(item.first() + item.len() as u64 - 1);
                n += item.len();
            }
        }
        assert_eq!(n, self.len);
    }
}
