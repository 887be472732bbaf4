use super::format::decode_ack;
use super::*;

/// The smallest segment size the log accepts, so tests roll segments with little data.
const SMALL: u64 = 64 * 1024;

fn seqs(log: &SegmentLog, queue: &str) -> Vec<u64> {
    log.recover_all(queue)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for q in std::fs::read_dir(dir).unwrap().flatten() {
        if q.file_name() == "quarantine" || !q.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(q.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().ends_with(".seg") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    crate::store::conformance::run_log(&log).await;
    crate::store::conformance::run_stream(&log).await;
}

#[tokio::test]
async fn records_marks_and_removals_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), SMALL).unwrap();
        for seq in 1..=300u64 {
            log.append("q", seq, &vec![seq as u8; 1000], &seq.to_be_bytes())
                .unwrap();
        }
        for seq in (1..=300u64).filter(|s| s % 3 == 0) {
            log.remove("q", seq).unwrap();
        }
        log.mark_delivered("q", 7, 2).unwrap();
        log.sync_messages().await.unwrap();
    }
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    let recovered = log.recover_all("q").unwrap();
    assert_eq!(recovered.len(), 200);
    assert!(recovered.iter().all(|m| m.seq % 3 != 0));
    let seven = recovered.iter().find(|m| m.seq == 7).unwrap();
    assert_eq!(
        (seven.deliveries, &seven.meta[..]),
        (2, &7u64.to_be_bytes()[..])
    );
    assert_eq!(
        log.read("q", 299).unwrap().unwrap(),
        vec![299u64 as u8; 1000]
    );
    // Appends continue in a new segment after the highest recovered number.
    log.append("q", 301, b"next", b"").unwrap();
    assert_eq!(&log.read("q", 301).unwrap().unwrap()[..], b"next");
    let mut ranged = Vec::new();
    log.read_range("q", 295, 400, &mut |seq, _| {
        ranged.push(seq);
        true
    })
    .unwrap();
    assert_eq!(ranged, [295, 296, 298, 299, 301]);
}

#[tokio::test]
async fn settled_segments_are_deleted_and_disk_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    for seq in 1..=2000u64 {
        log.append("q", seq, &[1u8; 1000], b"").unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 30);
    for seq in 1..=2000u64 {
        log.remove("q", seq).unwrap();
    }
    // Only the segment still being appended to is left.
    assert_eq!(segment_files(dir.path()).len(), 1);
    let stats = log.stats();
    assert!(stats.bytes <= SMALL + 2048, "{stats:?}");
}

/// One unsettled message does not pin its segment: the segment is rewritten with just it.
#[tokio::test]
async fn a_straggler_is_compacted_not_pinning_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
    for seq in 1..=6000u64 {
        log.append("q", seq, &[seq as u8; 1000], b"m").unwrap();
    }
    for seq in (1..=6000u64).filter(|s| *s != 10) {
        log.remove("q", seq).unwrap();
    }
    // The straggler's 4 MiB segment is down to under a megabyte of dead bytes (compaction's
    // slack) around it; the segment being appended to is emptied in place.
    let stats = log.stats();
    assert!(stats.bytes <= COMPACT_MIN_DEAD + 2048, "{stats:?}");
    log.mark_delivered("q", 10, 3).unwrap();
    assert_eq!(log.read("q", 10).unwrap().unwrap(), vec![10u8; 1000]);
    drop(log);
    let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
    let recovered = log.recover_all("q").unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!((recovered[0].seq, recovered[0].deliveries), (10, 3));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), SMALL).unwrap();
        for seq in 1..=10u64 {
            log.append("q", seq, b"whole", b"").unwrap();
        }
        log.sync_messages().await.unwrap();
    }
    let last = segment_files(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&last).unwrap().len();
    // Half a record: a frame promising more than follows.
    let mut torn = encode_record(11, b"never confirmed", b"").unwrap();
    torn.truncate(torn.len() - 4);
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&torn).unwrap();
    drop(f);
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    assert_eq!(seqs(&log, "q"), (1..=10).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&last).unwrap().len(), whole);
    log.append("q", 11, b"again", b"").unwrap();
    assert_eq!(&log.read("q", 11).unwrap().unwrap()[..], b"again");
}

#[tokio::test]
async fn a_corrupt_middle_segment_without_a_summary_goes_to_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), SMALL).unwrap();
        for seq in 1..=300u64 {
            log.append("q", seq, &[5u8; 1000], b"").unwrap();
        }
        log.sync_messages().await.unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let first = &files[0];
    let mut bytes = std::fs::read(first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(first, &bytes).unwrap();
    // A summary that does not check out is as good as none: the segment is read in full.
    let summary = first.with_extension("idx");
    let mut damaged = std::fs::read(&summary).unwrap();
    damaged[20] ^= 1;
    std::fs::write(&summary, &damaged).unwrap();
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    let recovered = seqs(&log, "q");
    assert!(!recovered.contains(&1), "{recovered:?}");
    assert!(!recovered.is_empty());
    assert_eq!(*recovered.last().unwrap(), 300);
    assert_eq!(log.stats().quarantined, 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
}

#[tokio::test]
async fn queues_not_recovered_are_removed_and_deletes_are_final() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), SMALL).unwrap();
        log.append("kept", 1, b"a", b"").unwrap();
        log.append("orphan", 1, b"b", b"").unwrap();
        log.append("deleted", 1, b"c", b"").unwrap();
        log.delete_queue("deleted").unwrap();
        log.sync_messages().await.unwrap();
    }
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    assert_eq!(seqs(&log, "kept"), [1]);
    assert!(seqs(&log, "deleted").is_empty());
    log.retain_recovered().unwrap();
    drop(log);
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    assert!(seqs(&log, "orphan").is_empty());
    assert_eq!(seqs(&log, "kept"), [1]);
    // A queue made again under a deleted name starts empty.
    log.append("orphan", 1, b"new", b"").unwrap();
    assert_eq!(&log.read("orphan", 1).unwrap().unwrap()[..], b"new");
}

#[tokio::test]
async fn a_sync_covers_every_file_written_since_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    for q in ["a", "b", "c"] {
        for seq in 1..=10 {
            log.append(q, seq, b"x", b"").unwrap();
        }
    }
    log.sync_messages().await.unwrap();
    let stats = log.stats();
    assert_eq!((stats.syncs, stats.synced_files), (1, 3));
    // Nothing new written: nothing to sync.
    log.sync_messages().await.unwrap();
    assert_eq!(log.stats().syncs, 1);
}

#[test]
fn records_and_acks_reject_damage() {
    let record = encode_record(9, b"body", b"meta").unwrap();
    let d = decode_record(&record).unwrap();
    assert_eq!(
        (d.seq, &record[d.meta.clone()], &record[d.record.clone()]),
        (9, &b"meta"[..], &b"body"[..])
    );
    for i in 0..record.len() {
        let mut bad = record.clone();
        bad[i] ^= 1;
        assert!(decode_record(&bad).is_none(), "byte {i} flipped");
    }
    assert!(decode_record(&record[..record.len() - 1]).is_none());
    let ack = encode_ack(5, ACK_DELIVERED, 2);
    assert_eq!(decode_ack(&ack), Some((5, ACK_DELIVERED, 2)));
    let mut bad = ack;
    bad[3] ^= 1;
    assert_eq!(decode_ack(&bad), None);
}

#[tokio::test]
async fn sealed_segments_are_indexed_from_their_summaries_not_their_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), SMALL).unwrap();
        for seq in 1..=300u64 {
            log.append("q", seq, &[seq as u8; 1000], &[seq as u8; 3])
                .unwrap();
        }
        log.remove("q", 2).unwrap();
        log.mark_delivered("q", 3, 2).unwrap();
        log.sync_messages().await.unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // Every sealed segment has its summary; the one appended to when the log closed does not.
    let summarized: Vec<bool> = files
        .iter()
        .map(|f| f.with_extension("idx").exists())
        .collect();
    assert!(
        summarized[..files.len() - 1].iter().all(|s| *s),
        "{summarized:?}"
    );
    // Damage a record of the first segment: recovery does not read it, so it still lists
    // it, and the damage shows when that message is read (and only that one).
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&files[0], &bytes).unwrap();
    let log = SegmentLog::open(dir.path(), SMALL).unwrap();
    let recovered = log.recover_all("q").unwrap();
    let want: Vec<u64> = (1..=300).filter(|s| *s != 2).collect();
    assert_eq!(recovered.iter().map(|m| m.seq).collect::<Vec<_>>(), want);
    assert!(recovered.iter().all(|m| m.meta[..] == [m.seq as u8; 3]));
    assert_eq!(recovered[1].deliveries, 2);
    let unreadable: Vec<u64> = want
        .iter()
        .copied()
        .filter(|s| log.read("q", *s).is_err())
        .collect();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    for seq in want.iter().filter(|s| !unreadable.contains(s)) {
        assert_eq!(
            log.read("q", *seq).unwrap().unwrap(),
            vec![*seq as u8; 1000]
        );
    }
    assert_eq!(log.stats().quarantined, 0);
    // The segment that was newest was read in full and is summarized now.
    drop(log);
    assert!(files.iter().all(|f| f.with_extension("idx").exists()));
}

#[tokio::test]
async fn a_compacted_segment_gets_a_new_summary_and_recovers_from_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
        for seq in 1..=6000u64 {
            log.append("q", seq, &[seq as u8; 1000], b"m").unwrap();
        }
        for seq in (1..=6000u64).filter(|s| *s % 1000 != 7) {
            log.remove("q", seq).unwrap();
        }
        log.sync_messages().await.unwrap();
    }
    let first = &segment_files(dir.path())[0];
    assert!(first.with_extension("idx").exists());
    let leftover: Vec<_> = std::fs::read_dir(first.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftover.is_empty());
    // Damage the compacted segment's first record: were its summary the old one (or none),
    // recovery would not list all six.
    let mut bytes = std::fs::read(first).unwrap();
    bytes[MAGIC.len() + 30] ^= 0xFF;
    std::fs::write(first, &bytes).unwrap();
    let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
    assert_eq!(seqs(&log, "q"), vec![7, 1007, 2007, 3007, 4007, 5007]);
    assert!(log.read("q", 7).is_err());
    assert_eq!(
        log.read("q", 1007).unwrap().unwrap(),
        vec![1007u64 as u8; 1000]
    );
}

#[tokio::test]
async fn compaction_drops_a_damaged_record_alone_and_keeps_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
        for seq in 1..=6000u64 {
            log.append("q", seq, &[seq as u8; 1000], b"m").unwrap();
        }
        log.sync_messages().await.unwrap();
    }
    // Damage record 7 of the sealed first segment: recovery from its summary does not see it.
    let first = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(first).unwrap();
    let record = bytes.len() / 4070 + 1; // about one record's length
    bytes[MAGIC.len() + 6 * record + 40] ^= 0xFF;
    std::fs::write(first, &bytes).unwrap();
    {
        let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
        assert_eq!(seqs(&log, "q").len(), 6000);
        assert!(log.read("q", 7).is_err());
        assert!(log.read("q", 6).is_ok() && log.read("q", 8).is_ok());
        for seq in (1..=6000u64).filter(|s| *s % 1000 != 7 && *s != 8) {
            log.remove("q", seq).unwrap();
        }
        log.sync_messages().await.unwrap();
    }
    assert!(first.with_extension("idx").exists());
    let log = SegmentLog::open(dir.path(), 4 * 1024 * 1024).unwrap();
    assert_eq!(log.stats().quarantined, 0);
    let recovered = seqs(&log, "q");
    assert!(!recovered.contains(&7), "{recovered:?}");
    assert!(
        recovered.contains(&8) && recovered.contains(&1007),
        "{recovered:?}"
    );
    assert_eq!(log.read("q", 8).unwrap().unwrap(), vec![8u8; 1000]);
}
