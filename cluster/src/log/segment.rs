//! The on-disk record format of the Raft log and the scan that recovers a
//! segment after a crash.
//!
//! A segment is a file of records, each:
//!
//! ```text
//! magic "LGWR" (4) | payload length u32 LE (4) | CRC32 of length+payload (4) | payload
//! ```
//!
//! The payload is one serde-encoded log entry. The CRC covers the length too,
//! so a damaged length is caught rather than followed. The magic lets the
//! recovery scan look past a damaged record for intact ones: that is how a
//! torn tail (damage with nothing valid after it: the last, unacknowledged
//! write of a crash) is told apart from corruption in the middle (damage
//! followed by records that were acknowledged, which must not be dropped).

use std::fmt;
use std::ops::Range;

pub const MAGIC: [u8; 4] = *b"LGWR";
pub const HEADER_LEN: usize = 12;
/// A record larger than this is damage, not data: a configuration is far
/// smaller, and the bound keeps a corrupt length from allocating gigabytes.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Appends one record holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    // MAX_PAYLOAD < u32::MAX, and the caller checked the length.
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside the record.
    Short,
    BadMagic,
    TooLong(usize),
    BadCrc,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Short => f.write_str("the file ends inside the record"),
            Damage::BadMagic => f.write_str("no record marker"),
            Damage::TooLong(n) => write!(f, "record length {n} exceeds {MAX_PAYLOAD}"),
            Damage::BadCrc => f.write_str("checksum mismatch"),
        }
    }
}

/// Parses the record at `offset`: the range of its payload in `buf`, or the
/// damage found there.
pub fn parse(buf: &[u8], offset: usize) -> Result<Range<usize>, Damage> {
    let header = buf.get(offset..offset + HEADER_LEN).ok_or(Damage::Short)?;
    if header[0..4] != MAGIC {
        return Err(Damage::BadMagic);
    }
    let len_bytes: [u8; 4] = [header[4], header[5], header[6], header[7]];
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD {
        return Err(Damage::TooLong(len));
    }
    let start = offset + HEADER_LEN;
    let payload = buf.get(start..start + len).ok_or(Damage::Short)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Err(Damage::BadCrc);
    }
    Ok(start..start + len)
}

/// The offset of the first intact record strictly after `offset`, if any.
pub fn next_intact(buf: &[u8], offset: usize) -> Option<usize> {
    let mut from = offset + 1;
    while from + MAGIC.len() <= buf.len() {
        let pos = from + buf[from..].windows(MAGIC.len()).position(|w| w == MAGIC)?;
        if parse(buf, pos).is_ok() {
            return Some(pos);
        }
        from = pos + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_records() -> Vec<u8> {
        let mut buf = Vec::new();
        encode(b"first", &mut buf);
        encode(b"second", &mut buf);
        buf
    }

    #[test]
    fn records_round_trip() {
        let buf = two_records();
        let first = parse(&buf, 0).unwrap();
        assert_eq!(&buf[first.clone()], b"first");
        let second = parse(&buf, first.end).unwrap();
        assert_eq!(&buf[second.clone()], b"second");
        assert_eq!(second.end, buf.len());
        assert_eq!(parse(&buf, buf.len()), Err(Damage::Short));
    }

    #[test]
    fn damage_is_classified() {
        let buf = two_records();
        let second = HEADER_LEN + 5;
        assert_eq!(parse(&buf[..buf.len() - 1], second), Err(Damage::Short));
        assert_eq!(parse(&buf[..second + 3], second), Err(Damage::Short));
        let mut flipped = buf.clone();
        flipped[second + HEADER_LEN] ^= 1;
        assert_eq!(parse(&flipped, second), Err(Damage::BadCrc));
        let mut bad_len = buf.clone();
        bad_len[4] = 6; // "first" claims 6 bytes: the CRC covers the length
        assert_eq!(parse(&bad_len, 0), Err(Damage::BadCrc));
        assert_eq!(parse(&[0u8; 20], 0), Err(Damage::BadMagic));
        let mut huge = buf;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&huge, 0), Err(Damage::TooLong(_))));
    }

    #[test]
    fn next_intact_finds_the_record_after_damage() {
        let mut buf = two_records();
        buf[HEADER_LEN] ^= 0xff; // corrupt "first"
        assert_eq!(next_intact(&buf, 0), Some(HEADER_LEN + 5));
        assert_eq!(next_intact(&buf, HEADER_LEN + 5), None);
    }
}
