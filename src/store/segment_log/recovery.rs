//! Reading a queue's segments back at start-up: every checksum checked, a torn tail cut, a
//! segment corrupt before its end moved to `quarantine/`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{
    decode_ack, decode_record, ACK_DELIVERED, ACK_ENTRY, ACK_REMOVED, FIXED, FRAME, MAGIC,
    MAX_RECORD,
};
use super::summary::{decode_summary, SummaryWriter};
use super::{
    ack_name, fsync_dir, io, segment_name, summary_name, QueueLog, Segment, SegmentIndex,
    SegmentLog,
};
use crate::store::{StoreError, StoredMessage};

impl SegmentLog {
    /// Read a queue's segments from disk if that has not happened yet, visiting every live
    /// record's sequence, metadata and delivery count.
    pub(super) fn load(
        &self,
        q: &mut QueueLog,
        visit: &mut dyn FnMut(StoredMessage),
    ) -> Result<(), StoreError> {
        if q.loaded {
            return Ok(());
        }
        let mut ids: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&q.dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                ids.push(id);
            } else if name.ends_with(".tmp") {
                // A compaction a crash interrupted: the original is still in place.
                let _ = std::fs::remove_file(q.dir.join(&*name));
            }
        }
        ids.sort_unstable();
        let mut last_seq = None;
        let count = ids.len();
        for (i, id) in ids.into_iter().enumerate() {
            let newest = i + 1 == count;
            match self.load_segment(q, id, newest, &mut last_seq, visit)? {
                Some(segment) if segment.live > 0 => {
                    q.segments.insert(id, segment);
                }
                Some(_) => self.remove_segment_files(&q.dir, id)?,
                None => {}
            }
        }
        q.loaded = true;
        Ok(())
    }

    /// Read one segment. `None`: it was corrupt before its end and is now in quarantine.
    fn load_segment(
        &self,
        q: &QueueLog,
        id: u64,
        newest: bool,
        last_seq: &mut Option<u64>,
        visit: &mut dyn FnMut(StoredMessage),
    ) -> Result<Option<Segment>, StoreError> {
        let path = q.dir.join(segment_name(id));
        let (removed, marks) = read_acks(&q.dir.join(ack_name(id)))?;
        if !newest {
            if let Some(segment) = self.load_summarized(q, id, last_seq, &removed, &marks, visit)? {
                return Ok(Some(segment));
            }
        }
        // Read in full; its summary is written as it is read (it will never be appended to).
        let mut summary = SummaryWriter::create(&q.dir.join(summary_name(id))).ok();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut magic = [0u8; 8];
        let mut good = 0u64;
        let mut index = SegmentIndex::new(MAGIC.len() as u64);
        // Visited only once the whole segment has been checked: a segment quarantined part-way
        // must not have handed out its first records.
        let mut found = Vec::new();
        let mut damaged = reader.read_exact(&mut magic).is_err() || &magic != MAGIC;
        if !damaged {
            good = MAGIC.len() as u64;
            let mut buf = Vec::new();
            while good < size {
                let mut frame = [0u8; FRAME];
                if reader.read_exact(&mut frame).is_err() {
                    damaged = true;
                    break;
                }
                let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
                if !(FIXED..=MAX_RECORD).contains(&len) || good + (FRAME + len) as u64 > size {
                    damaged = true;
                    break;
                }
                buf.clear();
                buf.extend_from_slice(&frame);
                buf.resize(FRAME + len, 0);
                if reader.read_exact(&mut buf[FRAME..]).is_err() {
                    damaged = true;
                    break;
                }
                let Some(d) = decode_record(&buf) else {
                    damaged = true;
                    break;
                };
                // Numbers rise, and none is below its segment's name (lookups go by name).
                if d.seq < id || last_seq.is_some_and(|l| d.seq <= l) {
                    damaged = true;
                    break;
                }
                *last_seq = Some(d.seq);
                let record_len = (FRAME + len) as u32;
                summary = summary.and_then(|mut w| {
                    let meta = buf.get(d.meta.clone()).unwrap_or_default();
                    match w.add(d.seq, record_len, meta) {
                        Ok(()) => Some(w),
                        Err(_) => {
                            w.discard();
                            None
                        }
                    }
                });
                let settled = removed.contains(&d.seq);
                index.push(d.seq, record_len);
                if settled {
                    index.settle(index.len().saturating_sub(1));
                } else {
                    found.push(StoredMessage {
                        seq: d.seq,
                        meta: Bytes::copy_from_slice(buf.get(d.meta).unwrap_or_default()),
                        deliveries: marks.get(&d.seq).copied().unwrap_or(0),
                    });
                }
                good += u64::from(record_len);
            }
        }
        if damaged && !newest {
            drop(reader);
            if let Some(w) = summary {
                w.discard();
            }
            self.quarantine(q, id)?;
            return Ok(None);
        }
        if damaged {
            // The tail a crash cut short: nothing in it was ever confirmed.
            tracing::warn!(segment = %path.display(), valid_bytes = good, size, "cutting a torn segment tail");
            file.set_len(good.max(MAGIC.len() as u64)).map_err(io)?;
            if good < MAGIC.len() as u64 {
                file.write_all_at(MAGIC, 0).map_err(io)?;
            }
            file.sync_data().map_err(io)?;
        } else if newest {
            // Its last records may never have been synced (they were not confirmed), and it
            // will not be the newest for long: a power loss must not cut it short later, when
            // a cut before its end would send it to quarantine.
            file.sync_data().map_err(io)?;
        }
        let size = good.max(MAGIC.len() as u64);
        if let Some(w) = summary {
            if let Err(error) = w.finish(size) {
                tracing::warn!(%error, "writing a segment summary failed");
            }
        }
        found.into_iter().for_each(visit);
        Ok(Some(self.recovered_segment(file, size, index, &marks)))
    }

    /// A recovered segment, never appended to again: its live count and bytes, and the
    /// delivery marks it keeps, follow from its index.
    fn recovered_segment(
        &self,
        file: File,
        size: u64,
        index: SegmentIndex,
        marks: &HashMap<u64, u32>,
    ) -> Segment {
        let (mut live, mut live_bytes) = (0u32, 0u64);
        let mut kept = HashMap::new();
        for r in index.live_from(0) {
            live += 1;
            live_bytes += u64::from(r.len);
            if let Some(&n) = marks.get(&r.seq).filter(|n| **n > 0) {
                kept.insert(r.seq, n);
            }
        }
        Segment {
            file: Arc::new(file),
            file_id: self.file_id(),
            size,
            index,
            live,
            live_bytes,
            acks: None,
            marks: kept,
            summary: None,
        }
    }

    /// Index a sealed segment from its summary, without reading its records (their checksums
    /// are checked when they are read). `None`: no summary that checks out, read it in full.
    fn load_summarized(
        &self,
        q: &QueueLog,
        id: u64,
        last_seq: &mut Option<u64>,
        removed: &HashSet<u64>,
        marks: &HashMap<u64, u32>,
        visit: &mut dyn FnMut(StoredMessage),
    ) -> Result<Option<Segment>, StoreError> {
        let Ok(summary) = std::fs::read(q.dir.join(summary_name(id))) else {
            return Ok(None);
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(q.dir.join(segment_name(id)))
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 8];
        if file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
            return Ok(None);
        }
        let Some(records) = decode_summary(&summary, size, MAGIC.len() as u64) else {
            return Ok(None);
        };
        // Numbers rise across segments, and none is below its segment's name.
        if records
            .first()
            .is_some_and(|r| r.seq < id || last_seq.is_some_and(|l| r.seq <= l))
        {
            return Ok(None);
        }
        let mut index = SegmentIndex::new(MAGIC.len() as u64);
        for r in &records {
            index.push(r.seq, r.len);
            if removed.contains(&r.seq) {
                index.settle(index.len().saturating_sub(1));
                continue;
            }
            visit(StoredMessage {
                seq: r.seq,
                meta: Bytes::copy_from_slice(summary.get(r.meta.clone()).unwrap_or_default()),
                deliveries: marks.get(&r.seq).copied().unwrap_or(0),
            });
        }
        if let Some(r) = records.last() {
            *last_seq = Some(r.seq);
        }
        Ok(Some(self.recovered_segment(file, size, index, marks)))
    }

    /// Move a corrupt segment (and its ack file) aside, so the broker starts with the rest.
    fn quarantine(&self, q: &QueueLog, id: u64) -> Result<(), StoreError> {
        let dir = self.root.join("quarantine");
        std::fs::create_dir_all(&dir).map_err(io)?;
        let stem = format!(
            "{}-{id:020}",
            q.dir.file_name().unwrap_or_default().to_string_lossy()
        );
        tracing::error!(
            segment = %q.dir.join(segment_name(id)).display(),
            moved_to = %dir.display(),
            "a message segment is corrupt before its end; moved to quarantine, its messages are not recovered"
        );
        std::fs::rename(
            q.dir.join(segment_name(id)),
            dir.join(format!("{stem}.seg")),
        )
        .map_err(io)?;
        let _ = std::fs::remove_file(q.dir.join(summary_name(id)));
        match std::fs::rename(q.dir.join(ack_name(id)), dir.join(format!("{stem}.ack"))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        fsync_dir(&dir)?;
        fsync_dir(&q.dir)?;
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A segment's removals and delivery counts, from its ack file. A torn or damaged entry
/// settles nothing: at worst a redelivery.
fn read_acks(path: &std::path::Path) -> Result<(HashSet<u64>, HashMap<u64, u32>), StoreError> {
    let mut removed = HashSet::new();
    let mut marks = HashMap::new();
    match std::fs::read(path) {
        Ok(acks) => {
            for entry in acks.chunks_exact(ACK_ENTRY) {
                match decode_ack(entry) {
                    Some((seq, ACK_REMOVED, _)) => {
                        removed.insert(seq);
                        marks.remove(&seq);
                    }
                    Some((seq, ACK_DELIVERED, n)) => {
                        marks.insert(seq, n);
                    }
                    Some(_) | None => {}
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    Ok((removed, marks))
}
