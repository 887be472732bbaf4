//! A segment's summary (`{first seq:020}.idx`): every record's sequence number, length and
//! metadata, so that recovery indexes a sealed segment without reading its messages.
//!
//! `[magic][entries: [seq u64][len u32][meta len u16][meta]...][segment size u64][count u32]
//! [crc32c u32]`, the checksum covering everything before it. Written as the segment is
//! appended to (a small buffer at a time) and finished when it is sealed; a segment is never
//! appended to after that. Nothing relies on a summary: one that is missing, unfinished
//! (the segment a crash interrupted), damaged, or written for a different size of the
//! segment is ignored, and the segment is read in full as if there were none. So a summary is
//! never synced, and it is removed before its segment is rewritten.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::format::{FIXED, FRAME, MAX_RECORD};

/// The first bytes of every summary file (and its format version).
pub const SUMMARY_MAGIC: &[u8; 8] = b"LVIDX01\n";
/// `[seq][len][meta len]`: the fixed part of an entry.
const ENTRY: usize = 8 + 4 + 2;
/// `[segment size][count][crc]`.
const TRAILER: usize = 8 + 4 + 4;
/// Buffered entries are written out past this many bytes: a queue's open summary costs at
/// most this much memory.
const BUFFER: usize = 4096;

/// Summary bytes as they are made: the checksum runs along.
#[derive(Debug)]
struct Encoder {
    buf: Vec<u8>,
    crc: u32,
    count: u32,
}

impl Encoder {
    fn new() -> Self {
        let mut e = Self {
            buf: Vec::new(),
            crc: 0,
            count: 0,
        };
        e.put(SUMMARY_MAGIC);
        e
    }

    fn put(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.buf.extend_from_slice(bytes);
    }

    fn add(&mut self, seq: u64, len: u32, meta: &[u8]) -> std::io::Result<()> {
        let meta_len = u16::try_from(meta.len()).map_err(std::io::Error::other)?;
        self.put(&seq.to_be_bytes());
        self.put(&len.to_be_bytes());
        self.put(&meta_len.to_be_bytes());
        self.put(meta);
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    fn finish(&mut self, size: u64) {
        let count = self.count;
        self.put(&size.to_be_bytes());
        self.put(&count.to_be_bytes());
        let crc = self.crc;
        self.buf.extend_from_slice(&crc.to_be_bytes());
    }
}

/// A whole summary of a segment of `size` bytes holding `records` (sequence number, length on
/// disk, metadata), as the log writes it: for tests and fuzzing.
pub fn encode_summary(size: u64, records: &[(u64, u32, &[u8])]) -> Vec<u8> {
    let mut e = Encoder::new();
    for (seq, len, meta) in records {
        if e.add(*seq, *len, meta).is_err() {
            break;
        }
    }
    e.finish(size);
    e.buf
}

/// The summary of the segment being appended to.
#[derive(Debug)]
pub(super) struct SummaryWriter {
    path: PathBuf,
    file: File,
    encoder: Encoder,
}

impl SummaryWriter {
    /// Start the summary at `path` (replacing any file there).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path).inspect_err(|_| {
            // An older summary under this name must not outlive the segment it described
            // (names come back: a queue emptied and restarted numbers from 1 again).
            let _ = std::fs::remove_file(path);
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
            encoder: Encoder::new(),
        })
    }

    /// Add a record (`len`: its length on disk, frame included).
    pub fn add(&mut self, seq: u64, len: u32, meta: &[u8]) -> std::io::Result<()> {
        self.encoder.add(seq, len, meta)?;
        if self.encoder.buf.len() >= BUFFER {
            self.file.write_all(&self.encoder.buf)?;
            self.encoder.buf.clear();
        }
        Ok(())
    }

    /// Finish it: the segment is `size` bytes and will not change again.
    pub fn finish(mut self, size: u64) -> std::io::Result<()> {
        self.encoder.finish(size);
        self.file.write_all(&self.encoder.buf)
    }

    /// Start over, empty: the segment was emptied in place.
    pub fn restart(self) -> std::io::Result<Self> {
        let path = self.path.clone();
        drop(self);
        Self::create(&path)
    }

    /// Give up on it (an I/O error, or the segment was emptied): the file goes, and recovery
    /// reads the segment in full.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One record as a summary lists it; `meta` is a range of the summary's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Summarized {
    pub seq: u64,
    pub len: u32,
    pub meta: Range<usize>,
}

/// A finished summary's records, if it checks out for a segment of `size` bytes whose
/// records start at `base`: its checksum, its size, lengths that add up and fit a record,
/// sequence numbers that rise.
pub(super) fn decode_summary(bytes: &[u8], size: u64, base: u64) -> Option<Vec<Summarized>> {
    let body_end = bytes.len().checked_sub(4)?;
    let crc = u32::from_be_bytes(bytes.get(body_end..)?.try_into().ok()?);
    if bytes.get(..SUMMARY_MAGIC.len())? != SUMMARY_MAGIC
        || crc32c::crc32c(bytes.get(..body_end)?) != crc
    {
        return None;
    }
    let trailer = bytes.len().checked_sub(TRAILER)?;
    let written_for = u64::from_be_bytes(bytes.get(trailer..trailer + 8)?.try_into().ok()?);
    let count = u32::from_be_bytes(bytes.get(trailer + 8..trailer + 12)?.try_into().ok()?);
    if written_for != size || trailer < SUMMARY_MAGIC.len() {
        return None;
    }
    // Every entry takes at least ENTRY bytes: a count that could not fit is a lie.
    if count as usize > (trailer - SUMMARY_MAGIC.len()) / ENTRY {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut at = SUMMARY_MAGIC.len();
    let mut end = base;
    let mut last: Option<u64> = None;
    for _ in 0..count {
        let seq = u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_be_bytes(bytes.get(at + 8..at + 12)?.try_into().ok()?);
        let meta_len = usize::from(u16::from_be_bytes(
            bytes.get(at + 12..at + 14)?.try_into().ok()?,
        ));
        let meta = at + ENTRY..at + ENTRY + meta_len;
        if meta.end > trailer
            || (len as usize) < FRAME + FIXED + meta_len
            || len as usize > FRAME + MAX_RECORD
            || last.is_some_and(|l| seq <= l)
        {
            return None;
        }
        last = Some(seq);
        end = end.checked_add(u64::from(len))?;
        at = meta.end;
        out.push(Summarized { seq, len, meta });
    }
    (at == trailer && end == size).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_summary_reads_back_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        let mut w = SummaryWriter::create(&path).unwrap();
        let base = 8u64;
        let mut size = base;
        let mut want = Vec::new();
        for seq in 1..2000u64 {
            let meta = vec![seq as u8; (seq % 5) as usize];
            let len = (FRAME + FIXED + meta.len() + 40) as u32;
            w.add(seq * 2, len, &meta).unwrap();
            want.push((seq * 2, len, meta));
            size += u64::from(len);
        }
        w.finish(size).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let records: Vec<(u64, u32, &[u8])> =
            want.iter().map(|(s, l, m)| (*s, *l, &m[..])).collect();
        assert_eq!(encode_summary(size, &records), bytes);
        let got = decode_summary(&bytes, size, base).unwrap();
        let got: Vec<_> = got
            .iter()
            .map(|s| (s.seq, s.len, bytes[s.meta.clone()].to_vec()))
            .collect();
        assert_eq!(got, want);
        assert!(decode_summary(&bytes, size + 1, base).is_none());
        for at in [0, 9, bytes.len() / 2, bytes.len() - 5, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(decode_summary(&damaged, size, base).is_none(), "{at}");
        }
        for cut in [0, 1, 20, bytes.len() - 1] {
            assert!(decode_summary(&bytes[..cut], size, base).is_none(), "{cut}");
        }
    }

    #[test]
    fn an_unfinished_summary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        let mut w = SummaryWriter::create(&path).unwrap();
        for seq in 1..1000u64 {
            w.add(seq, 100, b"meta").unwrap();
        }
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.is_empty());
        assert!(decode_summary(&bytes, 8 + 999 * 100, 8).is_none());
    }
}
