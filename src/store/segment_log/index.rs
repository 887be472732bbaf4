//! A segment's index: which sequence numbers it holds, where each record is, and which are
//! settled, in a little over two bytes a record (a deep queue's index must not cost what its
//! messages would).
//!
//! Invariants: records sit back to back from `base`, in rising sequence order, so a record's
//! offset is `base` plus the lengths before it; an offset is kept for every [`BLOCK`]th record
//! so that finding one sums at most `BLOCK - 1` lengths. Sequence numbers are kept as runs of
//! consecutive numbers (one run per segment when a queue's records are all in it).

use std::collections::HashMap;

/// Records between two kept offsets.
const BLOCK: usize = 64;
/// A length that does not fit the compact slot; the real one is in `big`.
const BIG: u16 = u16::MAX;

/// One record's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Located {
    pub seq: u64,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug, Default)]
pub(super) struct SegmentIndex {
    base: u64,
    /// (first sequence, index of its record): each run of consecutive sequence numbers.
    runs: Vec<(u64, u32)>,
    lens: Vec<u16>,
    /// Lengths of `BIG` or more, by record index.
    big: HashMap<u32, u32>,
    /// Offset of every `BLOCK`th record.
    blocks: Vec<u64>,
    /// One bit per record: settled.
    settled: Vec<u64>,
}

impl SegmentIndex {
    /// An empty index whose first record will be at `base`.
    pub fn new(base: u64) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }

    /// Records, settled or not.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Forget every record; the next starts at `base` again.
    pub fn clear(&mut self) {
        *self = Self::new(self.base);
    }

    /// The highest sequence number recorded.
    pub fn last_seq(&self) -> Option<u64> {
        let &(first, start) = self.runs.last()?;
        Some(first + (self.len() as u64 - 1 - u64::from(start)))
    }

    fn end(&self) -> u64 {
        let n = self.len();
        match n.checked_sub(1) {
            Some(last) => self.offset_at(last) + u64::from(self.len_at(last)),
            None => self.base,
        }
    }

    /// Add a record after the last one. `seq` must be above [`Self::last_seq`].
    pub fn push(&mut self, seq: u64, len: u32) {
        let i = self.len();
        if i.is_multiple_of(BLOCK) {
            let end = self.end();
            self.blocks.push(end);
        }
        if i.is_multiple_of(64) {
            self.settled.push(0);
        }
        if self.last_seq().and_then(|l| l.checked_add(1)) != Some(seq) {
            self.runs.push((seq, i as u32));
        }
        match u16::try_from(len) {
            Ok(l) if l < BIG => self.lens.push(l),
            Ok(_) | Err(_) => {
                self.big.insert(i as u32, len);
                self.lens.push(BIG);
            }
        }
    }

    fn len_at(&self, i: usize) -> u32 {
        match self.lens.get(i) {
            Some(&BIG) => self.big.get(&(i as u32)).copied().unwrap_or(0),
            Some(&l) => u32::from(l),
            None => 0,
        }
    }

    fn offset_at(&self, i: usize) -> u64 {
        let block = i / BLOCK;
        let start = self.blocks.get(block).copied().unwrap_or(self.base);
        (block * BLOCK..i).fold(start, |at, j| at + u64::from(self.len_at(j)))
    }

    fn seq_at(&self, i: usize) -> u64 {
        let r = self.runs.partition_point(|&(_, start)| start as usize <= i);
        match r.checked_sub(1).and_then(|r| self.runs.get(r)) {
            Some(&(first, start)) => first + (i - start as usize) as u64,
            None => 0,
        }
    }

    /// The index of the first record whose sequence number is `seq` or above.
    fn lower_bound(&self, seq: u64) -> usize {
        let r = self.runs.partition_point(|&(first, _)| first <= seq);
        let Some(&(first, start)) = r.checked_sub(1).and_then(|r| self.runs.get(r)) else {
            return 0;
        };
        let run_end = self
            .runs
            .get(r)
            .map_or(self.len(), |&(_, next)| next as usize);
        (start as usize)
            .saturating_add((seq - first).min(usize::MAX as u64 >> 1) as usize)
            .min(run_end)
    }

    fn is_settled(&self, i: usize) -> bool {
        self.settled
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The place of the live record `seq`, with its index.
    pub fn find(&self, seq: u64) -> Option<(usize, Located)> {
        let i = self.lower_bound(seq);
        if i >= self.len() || self.seq_at(i) != seq || self.is_settled(i) {
            return None;
        }
        Some((
            i,
            Located {
                seq,
                offset: self.offset_at(i),
                len: self.len_at(i),
            },
        ))
    }

    /// Mark record `i` settled; its length if it was live.
    pub fn settle(&mut self, i: usize) -> Option<u32> {
        if i >= self.len() || self.is_settled(i) {
            return None;
        }
        let word = self.settled.get_mut(i / 64)?;
        *word |= 1 << (i % 64);
        Some(self.len_at(i))
    }

    /// Live records from sequence `from` on, in order.
    pub fn live_from(&self, from: u64) -> LiveRecords<'_> {
        let i = self.lower_bound(from);
        LiveRecords {
            index: self,
            i,
            offset: self.offset_at(i),
            run: self
                .runs
                .partition_point(|&(_, start)| start as usize <= i)
                .saturating_sub(1),
        }
    }
}

/// Iterator over live records.
pub(super) struct LiveRecords<'a> {
    index: &'a SegmentIndex,
    i: usize,
    offset: u64,
    run: usize,
}

impl Iterator for LiveRecords<'_> {
    type Item = Located;

    fn next(&mut self) -> Option<Located> {
        let index = self.index;
        while self.i < index.len() {
            let i = self.i;
            while index
                .runs
                .get(self.run + 1)
                .is_some_and(|&(_, start)| start as usize <= i)
            {
                self.run += 1;
            }
            let (first, start) = index.runs.get(self.run).copied().unwrap_or((0, 0));
            let len = index.len_at(i);
            let here = Located {
                seq: first + (i - start as usize) as u64,
                offset: self.offset,
                len,
            };
            self.i += 1;
            self.offset += u64::from(len);
            if !index.is_settled(i) {
                return Some(here);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The index against a plain list of records.
    fn check(records: &[(u64, u32, bool)]) {
        let mut index = SegmentIndex::new(8);
        let mut model = Vec::new();
        let mut at = 8u64;
        for &(seq, len, _) in records {
            index.push(seq, len);
            model.push(Located {
                seq,
                offset: at,
                len,
            });
            at += u64::from(len);
        }
        for (i, &(_, _, settle)) in records.iter().enumerate() {
            if settle {
                assert_eq!(index.settle(i), Some(model[i].len));
                assert_eq!(index.settle(i), None);
            }
        }
        let live: Vec<Located> = model
            .iter()
            .zip(records)
            .filter(|(_, r)| !r.2)
            .map(|(l, _)| *l)
            .collect();
        assert_eq!(index.last_seq(), model.last().map(|l| l.seq));
        for l in &model {
            let settled = !live.contains(l);
            assert_eq!(index.find(l.seq).map(|(_, f)| f), (!settled).then_some(*l));
            assert_eq!(
                index.find(l.seq + 1).is_some(),
                live.iter().any(|x| x.seq == l.seq + 1)
            );
            let from: Vec<Located> = live.iter().filter(|x| x.seq >= l.seq).copied().collect();
            assert_eq!(index.live_from(l.seq).collect::<Vec<_>>(), from);
        }
        assert_eq!(index.live_from(0).collect::<Vec<_>>(), live);
    }

    proptest! {
        #[test]
        fn agrees_with_a_list(steps in proptest::collection::vec((1u64..4, 1u32..200_000, any::<bool>()), 0..400)) {
            let mut seq = 10;
            let records: Vec<(u64, u32, bool)> = steps
                .into_iter()
                .map(|(gap, len, settle)| {
                    seq += gap;
                    (seq, len % 3 * 70_000 + len % 1000 + 1, settle)
                })
                .collect();
            check(&records);
        }
    }

    #[test]
    fn costs_little_over_two_bytes_a_record() {
        let mut index = SegmentIndex::new(8);
        for seq in 0..100_000 {
            index.push(seq, 40);
        }
        let bytes =
            index.lens.capacity() * 2 + index.blocks.capacity() * 8 + index.settled.capacity() * 8;
        assert!(bytes < 100_000 * 3, "{bytes}");
        assert_eq!(index.runs.len(), 1);
    }
}
