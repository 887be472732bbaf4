//! Giving space back in place: a settled segment that is still appended to is emptied, and a
//! mostly settled sealed one is rewritten with only its live records (same name, so lookups by
//! sequence still find them), its summary replaced after it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::format::{decode_record, encode_ack, ACK_DELIVERED, MAGIC};
use super::index::SegmentIndex;
use super::summary::SummaryWriter;
use super::{ack_name, fsync_dir, io, segment_name, summary_name, Segment, SegmentLog};
use crate::store::StoreError;

impl SegmentLog {
    /// Empty an all-settled segment in place: its file back to the magic line, its ack file
    /// to nothing. Appends continue in it.
    pub(super) fn reset(segment: &mut Segment) -> Result<(), StoreError> {
        segment.file.set_len(MAGIC.len() as u64).map_err(io)?;
        if let Some(acks) = &segment.acks {
            acks.set_len(0).map_err(io)?;
        }
        segment.size = MAGIC.len() as u64;
        segment.index.clear();
        segment.live_bytes = 0;
        segment.marks.clear();
        if let Some(w) = segment.summary.take() {
            segment.summary = w.restart().ok();
        }
        Ok(())
    }

    /// Rewrite a mostly settled segment with only its live records.
    pub(super) fn compact(
        &self,
        dir: &Path,
        id: u64,
        segment: &mut Segment,
    ) -> Result<(), StoreError> {
        let tmp = dir.join(format!("{}.tmp", segment_name(id)));
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        out.write_all_at(MAGIC, 0).map_err(io)?;
        let mut at = MAGIC.len() as u64;
        let mut buf = Vec::new();
        let mut index = SegmentIndex::new(at);
        let summary_tmp = dir.join(format!("{}.tmp", summary_name(id)));
        let mut summary = SummaryWriter::create(&summary_tmp).ok();
        let mut dropped = Vec::new();
        for e in segment.index.live_from(0) {
            buf.resize(e.len as usize, 0);
            segment.file.read_exact_at(&mut buf, e.offset).map_err(io)?;
            // A record that fails its checksum (a summarized segment's records are not checked
            // at recovery) is lost alone: copied, it would leave the rewrite without a summary
            // and send all of it to quarantine at the next start.
            let Some(meta) = decode_record(&buf)
                .filter(|d| d.seq == e.seq)
                .and_then(|d| buf.get(d.meta))
            else {
                tracing::error!(segment = %dir.join(segment_name(id)).display(), seq = e.seq, "a stored message failed its checksum; dropping it");
                dropped.push(e);
                continue;
            };
            out.write_all_at(&buf, at).map_err(io)?;
            index.push(e.seq, e.len);
            at += u64::from(e.len);
            summary = summary.and_then(|mut w| match w.add(e.seq, e.len, meta) {
                Ok(()) => Some(w),
                Err(_) => {
                    w.discard();
                    None
                }
            });
        }
        for e in dropped {
            segment.live = segment.live.saturating_sub(1);
            segment.live_bytes = segment.live_bytes.saturating_sub(u64::from(e.len));
            segment.marks.remove(&e.seq);
        }
        out.sync_data().map_err(io)?;
        // The delivery counts go into a fresh ack file; the old one's removals name records
        // the new segment no longer has.
        let ack_tmp = dir.join(format!("{}.tmp", ack_name(id)));
        let mut acks = File::create(&ack_tmp).map_err(io)?;
        for (seq, n) in &segment.marks {
            acks.write_all(&encode_ack(*seq, ACK_DELIVERED, *n))
                .map_err(io)?;
        }
        acks.sync_data().map_err(io)?;
        // The old summary goes before the segment it describes is replaced; the new one
        // arrives after (until then recovery reads the segment in full).
        match std::fs::remove_file(dir.join(summary_name(id))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::rename(&tmp, dir.join(segment_name(id))).map_err(io)?;
        std::fs::rename(&ack_tmp, dir.join(ack_name(id))).map_err(io)?;
        if let Some(w) = summary {
            if w.finish(at).is_ok() {
                let _ = std::fs::rename(&summary_tmp, dir.join(summary_name(id)));
            } else {
                let _ = std::fs::remove_file(&summary_tmp);
            }
        }
        fsync_dir(dir)?;
        segment.file = Arc::new(out);
        segment.file_id = self.file_id();
        segment.size = at;
        segment.index = index;
        segment.acks = None;
        Ok(())
    }
}
