//! The message log's recovery on arbitrary segment and ack files: opening, recovering, reading,
//! appending and settling never panic, recovered sequence numbers rise, and everything recovered
//! reads back. Half the inputs are turned into well-formed records first (with their checksums)
//! and then cut or damaged at a chosen byte, so the fuzzer reaches past the checksum.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use leveret::store::segment_log::{encode_ack, encode_record, MAGIC};
use leveret::store::{MessageLog, SegmentLog};
use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

/// Valid records (and acks) from the input: each chunk of it a record, its first byte the gap
/// to its sequence number.
fn well_formed(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut segment = MAGIC.to_vec();
    let mut acks = Vec::new();
    let mut seq = 0u64;
    for chunk in data.chunks(23) {
        let gap = u64::from(chunk.first().copied().unwrap_or(0) % 4);
        seq += gap;
        if let Ok(record) = encode_record(seq, chunk, &chunk[..chunk.len().min(3)]) {
            segment.extend_from_slice(&record);
        }
        if chunk.len() > 5 && chunk[5] % 3 == 0 {
            acks.extend_from_slice(&encode_ack(seq, chunk[5] % 2, u32::from(chunk[4])));
        }
    }
    (segment, acks)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut segment, mut acks) = if mode & 1 == 0 {
        let split = usize::from(mode >> 1).min(rest.len());
        let (a, b) = rest.split_at(rest.len() - split);
        let mut segment = if mode & 2 == 0 {
            MAGIC.to_vec()
        } else {
            Vec::new()
        };
        segment.extend_from_slice(a);
        (segment, b.to_vec())
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
    let (first, second) = segment.split_at(segment.len() / 2);
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
                assert!(
                    matches!(log.read("q", *seq), Ok(Some(_))),
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
