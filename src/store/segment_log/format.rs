//! The on-disk format of segment and ack files: encoding, and checked decoding that never
//! trusts a length it has not bounded.

use super::StoreError;

/// The first bytes of every segment file (and its format version).
pub const MAGIC: &[u8; 8] = b"LVSEG01\n";
/// `[len][crc]`: what precedes the checksummed part of a record.
pub(super) const FRAME: usize = 8;
/// `[seq][flags][meta len]`: the fixed part of the checksummed bytes.
pub(super) const FIXED: usize = 8 + 1 + 2;
/// The largest checksummed part recovery believes (a larger length is corruption).
pub(super) const MAX_RECORD: usize = 1 << 30;
/// One ack-file entry's size.
pub const ACK_ENTRY: usize = 17;
/// Ack-file entry kind: the record was removed.
pub const ACK_REMOVED: u8 = 0;
/// Ack-file entry kind: the record was delivered this many times.
pub const ACK_DELIVERED: u8 = 1;
/// One ack-file entry, as written.
pub fn encode_ack(seq: u64, kind: u8, value: u32) -> [u8; ACK_ENTRY] {
    let mut e = [0u8; ACK_ENTRY];
    e[..8].copy_from_slice(&seq.to_be_bytes());
    e[8] = kind;
    e[9..13].copy_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&e[..13]);
    e[13..].copy_from_slice(&crc.to_be_bytes());
    e
}

pub(super) fn decode_ack(e: &[u8]) -> Option<(u64, u8, u32)> {
    let crc = u32::from_be_bytes(e.get(13..17)?.try_into().ok()?);
    let body = e.get(..13)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let value = u32::from_be_bytes(body.get(9..13)?.try_into().ok()?);
    Some((seq, *body.get(8)?, value))
}

/// A record as it goes into a segment.
pub fn encode_record(seq: u64, record: &[u8], meta: &[u8]) -> Result<Vec<u8>, StoreError> {
    let meta_len = u16::try_from(meta.len())
        .map_err(|_| StoreError::Io(std::io::Error::other("message metadata too large")))?;
    let body = FIXED + meta.len() + record.len();
    if body > MAX_RECORD {
        return Err(StoreError::Io(std::io::Error::other(
            "message too large for the log",
        )));
    }
    let mut out = Vec::with_capacity(FRAME + body);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&meta_len.to_be_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(record);
    let crc = crc32c::crc32c(&out[FRAME..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// A record read back: sequence, metadata and record, from the bytes after the frame.
pub(super) struct Decoded {
    pub(super) seq: u64,
    pub(super) meta: std::ops::Range<usize>,
    pub(super) record: std::ops::Range<usize>,
}

/// Check and split a record (`bytes` holds the frame and what follows).
pub(super) fn decode_record(bytes: &[u8]) -> Option<Decoded> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(FRAME..FRAME.checked_add(len)?)?;
    if len < FIXED || crc32c::crc32c(body) != crc {
        return None;
    }
    let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let meta_len = usize::from(u16::from_be_bytes(body.get(9..11)?.try_into().ok()?));
    let meta_end = FRAME + FIXED + meta_len;
    if meta_end > FRAME + len {
        return None;
    }
    Some(Decoded {
        seq,
        meta: FRAME + FIXED..meta_end,
        record: meta_end..FRAME + len,
    })
}
