//! The message log's recovery on arbitrary segment and ack files: opening, recovering, reading,
//! appending and settling never panic, recovered sequence numbers rise, and everything recovered
//! reads back. Half the inputs are turned into well-formed records first (with their checksums)
//! and then cut or damaged at a chosen byte, so the fuzzer reaches past the checksum. Some
//! inputs give the first of two segments a summary (`.idx`): one made for its records, or raw
//! bytes; recovery from a summary does not read the records, so a damaged one may fail to read
//! back (an error, never a panic or wrong order).
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use leveret::store::segment_log::{encode_ack, encode_record, encode_summary, MAGIC, SUMMARY_MAGIC};
use leveret::store::{MessageLog, SegmentLog};
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

/// One record's place in a well-formed segment: sequence, end offset, length, metadata.
type Placed = (u64, usize, u32, Vec<u8>);

/// Valid records (and acks) from the input: each chunk of it a record, its first byte the gap
/// to its sequence number.
fn well_formed(data: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<Placed>) {
    let mut segment = MAGIC.to_vec();
    let mut acks = Vec::new();
    let mut placed = Vec::new();
    let mut seq = 0u64;
    for chunk in data.chunks(23) {
        let gap = u64::from(chunk.first().copied().unwrap_or(0) % 4);
        seq += gap;
        let meta = &chunk[..chunk.len().min(3)];
        if let Ok(record) = encode_record(seq, chunk, meta) {
            segment.extend_from_slice(&record);
            placed.push((seq, segment.len(), record.len() as u32, meta.to_vec()));
        }
        if chunk.len() > 5 && chunk[5] % 3 == 0 {
            acks.extend_from_slice(&encode_ack(seq, chunk[5] % 2, u32::from(chunk[4])));
        }
    }
    (segment, acks, placed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut segment, mut acks, placed) = if mode & 1 == 0 {
        let split = usize::from(mode >> 1).min(rest.len());
        let (a, b) = rest.split_at(rest.len() - split);
        let mut segment = if mode & 2 == 0 {
            MAGIC.to_vec()
        } else {
            Vec::new()
        };
        segment.extend_from_slice(a);
        (segment, b.to_vec(), Vec::new())
    } else {
        well_formed(rest)
    };
    // Damage: cut or flip at a position the input chooses.
    if mode & 4 != 0 && !segment.is_empty() {
        let at = rest.len().wrapping_mul(31) % segment.len();
        if mode & 8 != 0 {
            segment.truncate(at);
        } else if let Some(b) = segment.get_mut(at) {
            *b ^= mode;
        }
    }
    if mode & 16 != 0 {
        acks.truncate(acks.len().saturating_sub(3));
    }
    let root = std::env::temp_dir().join(format!(
        "leveret-fuzz-seglog-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let queue_dir = root.join("0000000000000001");
    std::fs::create_dir_all(&queue_dir).expect("temp dir");
    std::fs::write(queue_dir.join("QUEUE"), b"q").expect("write");
    // Two segments when the input is long enough: damage in the first is a middle segment.
    // With a summary, the split is at a record boundary, so that one made for the records
    // before it can check out.
    let with_summary = mode & 64 != 0;
    let mut split = segment.len() / 2;
    let mut summary = None;
    if with_summary {
        if placed.is_empty() {
            let mut raw = SUMMARY_MAGIC.to_vec();
            raw.extend_from_slice(&acks);
            summary = Some(raw);
        } else {
            let before: Vec<&Placed> = placed.iter().filter(|p| p.1 <= split).collect();
            split = before.last().map_or(MAGIC.len(), |p| p.1).min(segment.len());
            let records: Vec<(u64, u32, &[u8])> =
                before.iter().map(|p| (p.0, p.2, &p.3[..])).collect();
            summary = Some(encode_summary(split as u64, &records));
        }
    }
    let (first, second) = segment.split_at(split.min(segment.len()));
    if let Some(summary) = &summary {
        std::fs::write(queue_dir.join(format!("{:020}.idx", 0)), summary).expect("write");
    }
    if mode & 32 != 0 && first.len() > MAGIC.len() {
        std::fs::write(queue_dir.join(format!("{:020}.seg", 0)), first).expect("write");
        let mut tail = MAGIC.to_vec();
        tail.extend_from_slice(second);
        std::fs::write(queue_dir.join(format!("{:020}.seg", u64::MAX / 2)), tail).expect("write");
    } else {
        std::fs::write(queue_dir.join(format!("{:020}.seg", 0)), &segment).expect("write");
    }
    std::fs::write(queue_dir.join(format!("{:020}.ack", 0)), &acks).expect("write");

    if let Ok(log) = SegmentLog::open(&root, 64 * 1024) {
        if let Ok(recovered) = log.recover_all("q") {
            let seqs: Vec<u64> = recovered.iter().map(|m| m.seq).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "recovered out of order: {seqs:?}"
            );
            for seq in &seqs {
                let read = log.read("q", *seq);
                assert!(
                    matches!(read, Ok(Some(_))) || (with_summary && read.is_err()),
                    "recovered {seq} does not read back"
                );
            }
            let next = seqs.last().map_or(0, |s| s.saturating_add(1));
            if next < u64::MAX && log.append("q", next, b"after", b"").is_ok() {
                assert_eq!(
                    log.read("q", next).ok().flatten().as_deref(),
                    Some(&b"after"[..])
                );
            }
            for seq in seqs {
                let _ = log.remove("q", seq);
            }
        }
        let _ = log.retain_recovered();
    }
    let _ = std::fs::remove_dir_all(&root);
});
