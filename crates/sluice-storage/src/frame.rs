//! Batch framing: how one appended batch of entries is laid out in a segment file.
//!
//! Pure code, no I/O. All integers are little endian.
//!
//! ```text
//! frame   := body_len:u32  crc:u32  header  entry*
//!            body_len = byte length of header + entries
//!            crc      = CRC32C over header + entries
//! header  := version:u8 (=1)  reserved:[u8;3] (=0)  count:u32  base_index:u64
//!            first_term:u64  last_term:u64  first_ts:u64  last_ts:u64     (48 bytes)
//! entry   := term:u64  timestamp_ms:u64  payload_len:u32  payload
//! ```
//!
//! Entry `i` of the batch has index `base_index + i`. A frame is only trusted once its
//! checksum matches; the length field is covered indirectly, since a wrong length makes
//! the checksum run over the wrong bytes.

use crate::log::EntryRef;
use bytes::Bytes;

/// Bytes before the header: body length and checksum.
pub(crate) const PREFIX_LEN: usize = 8;
/// Bytes of the batch header.
pub(crate) const HEADER_LEN: usize = 48;
/// Fixed bytes of every frame.
pub(crate) const FRAME_OVERHEAD: usize = PREFIX_LEN + HEADER_LEN;
/// Fixed bytes of every entry besides its payload.
pub(crate) const ENTRY_OVERHEAD: usize = 20;
/// The largest frame (prefix included) the log writes or accepts.
pub(crate) const MAX_FRAME_BYTES: u64 = 1 << 30;

const FORMAT_VERSION: u8 = 1;

/// The decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub count: u32,
    pub base_index: u64,
    pub first_term: u64,
    pub last_term: u64,
    pub first_ts: u64,
    pub last_ts: u64,
}

impl BatchHeader {
    /// The index after the last entry of the batch.
    pub fn end_index(&self) -> u64 {
        self.base_index.saturating_add(u64::from(self.count))
    }
}

/// One entry decoded from a verified frame; the payload shares the frame's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedEntry {
    pub term: u64,
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

/// Total frame length (prefix included) for `entries`, or `None` on overflow.
pub(crate) fn encoded_len(entries: &[EntryRef<'_>]) -> Option<u64> {
    entries
        .iter()
        .try_fold(FRAME_OVERHEAD as u64, |acc, entry| {
            acc.checked_add(ENTRY_OVERHEAD as u64)?
                .checked_add(entry.payload.len() as u64)
        })
}

/// Encodes `entries` as one frame into `buf` (cleared first). The caller has checked
/// that the batch is non-empty and below [`MAX_FRAME_BYTES`].
pub(crate) fn encode(buf: &mut Vec<u8>, base_index: u64, entries: &[EntryRef<'_>]) -> BatchHeader {
    debug_assert!(!entries.is_empty());
    debug_assert!(encoded_len(entries).is_some_and(|len| len <= MAX_FRAME_BYTES));
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let first = entries.first();
    let last = entries.last();
    let header = BatchHeader {
        count,
        base_index,
        first_term: first.map_or(0, |e| e.term),
        last_term: last.map_or(0, |e| e.term),
        first_ts: first.map_or(0, |e| e.timestamp_ms),
        last_ts: last.map_or(0, |e| e.timestamp_ms),
    };
    buf.clear();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    buf.push(FORMAT_VERSION);
    buf.extend_from_slice(&[0u8; 3]);
    buf.extend_from_slice(&header.count.to_le_bytes());
    buf.extend_from_slice(&header.base_index.to_le_bytes());
    buf.extend_from_slice(&header.first_term.to_le_bytes());
    buf.extend_from_slice(&header.last_term.to_le_bytes());
    buf.extend_from_slice(&header.first_ts.to_le_bytes());
    buf.extend_from_slice(&header.last_ts.to_le_bytes());
    for entry in entries {
        buf.extend_from_slice(&entry.term.to_le_bytes());
        buf.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
        let len = u32::try_from(entry.payload.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(entry.payload);
    }
    let body_len = u32::try_from(buf.len() - PREFIX_LEN).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(&buf[PREFIX_LEN..]);
    buf[0..4].copy_from_slice(&body_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Splits the 8-byte prefix into (body length, checksum).
pub(crate) fn parse_prefix(prefix: &[u8]) -> Option<(u32, u32)> {
    Some((read_u32(prefix, 0)?, read_u32(prefix, 4)?))
}

/// Parses the header at the start of `body`. Returns `None` if the bytes cannot be a
/// header written by this version (it does not check the checksum).
pub(crate) fn parse_header(body: &[u8]) -> Option<BatchHeader> {
    if body.len() < HEADER_LEN || body[0] != FORMAT_VERSION || body[1..4] != [0, 0, 0] {
        return None;
    }
    let header = BatchHeader {
        count: read_u32(body, 4)?,
        base_index: read_u64(body, 8)?,
        first_term: read_u64(body, 16)?,
        last_term: read_u64(body, 24)?,
        first_ts: read_u64(body, 32)?,
        last_ts: read_u64(body, 40)?,
    };
    if header.count == 0
        || header
            .base_index
            .checked_add(u64::from(header.count))
            .is_none()
    {
        return None;
    }
    Some(header)
}

/// Whether `crc` matches the body.
pub(crate) fn crc_matches(body: &[u8], crc: u32) -> bool {
    crc32c::crc32c(body) == crc
}

/// Iterates the entries of a frame body (header included). Yields an error string for
/// framing that does not add up; stops after `count` entries.
pub(crate) struct EntryIter<'a> {
    body: &'a Bytes,
    offset: usize,
    remaining: u32,
}

impl<'a> EntryIter<'a> {
    pub fn new(body: &'a Bytes, header: &BatchHeader) -> Self {
        EntryIter {
            body,
            offset: HEADER_LEN,
            remaining: header.count,
        }
    }

    /// Whether the whole body was consumed (call after the iterator is exhausted).
    pub fn fully_consumed(&self) -> bool {
        self.remaining == 0 && self.offset == self.body.len()
    }
}

impl Iterator for EntryIter<'_> {
    type Item = Result<DecodedEntry, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let at = self.offset;
        let parsed = (|| {
            let term = read_u64(self.body, at)?;
            let timestamp_ms = read_u64(self.body, at + 8)?;
            let len = usize::try_from(read_u32(self.body, at + 16)?).ok()?;
            let start = at + ENTRY_OVERHEAD;
            let end = start.checked_add(len)?;
            if end > self.body.len() {
                return None;
            }
            Some((term, timestamp_ms, start, end))
        })();
        match parsed {
            Some((term, timestamp_ms, start, end)) => {
                self.offset = end;
                self.remaining -= 1;
                Some(Ok(DecodedEntry {
                    term,
                    timestamp_ms,
                    payload: self.body.slice(start..end),
                }))
            }
            None => {
                self.remaining = 0;
                Some(Err("entry runs past the end of its batch"))
            }
        }
    }
}

/// Fully decodes a verified body and checks that the entries agree with the header.
pub(crate) fn validate_entries(body: &Bytes, header: &BatchHeader) -> Result<(), &'static str> {
    let mut iter = EntryIter::new(body, header);
    let mut first: Option<DecodedEntry> = None;
    let mut last: Option<DecodedEntry> = None;
    for entry in iter.by_ref() {
        let entry = entry?;
        if first.is_none() {
            first = Some(entry.clone());
        }
        last = Some(entry);
    }
    if !iter.fully_consumed() {
        return Err("batch length does not match its entries");
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Err("batch has no entries");
    };
    if first.term != header.first_term
        || last.term != header.last_term
        || first.timestamp_ms != header.first_ts
        || last.timestamp_ms != header.last_ts
    {
        return Err("batch header disagrees with its entries");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<EntryRef<'static>> {
        vec![
            EntryRef {
                term: 3,
                timestamp_ms: 10,
                payload: b"alpha",
            },
            EntryRef {
                term: 4,
                timestamp_ms: 12,
                payload: b"",
            },
            EntryRef {
                term: 4,
                timestamp_ms: 12,
                payload: b"gamma-gamma",
            },
        ]
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let entries = entries();
        let mut buf = Vec::new();
        let header = encode(&mut buf, 41, &entries);
        assert_eq!(Some(buf.len() as u64), encoded_len(&entries));
        let (body_len, crc) = parse_prefix(&buf).unwrap();
        assert_eq!(body_len as usize, buf.len() - PREFIX_LEN);
        let body = Bytes::copy_from_slice(&buf[PREFIX_LEN..]);
        assert!(crc_matches(&body, crc));
        assert_eq!(parse_header(&body), Some(header));
        assert_eq!(header.base_index, 41);
        assert_eq!(header.end_index(), 44);
        assert_eq!((header.first_term, header.last_term), (3, 4));
        assert_eq!((header.first_ts, header.last_ts), (10, 12));
        validate_entries(&body, &header).unwrap();
        let decoded: Vec<DecodedEntry> = EntryIter::new(&body, &header)
            .collect::<Result<_, _>>()
            .unwrap();
        let payloads: Vec<&[u8]> = decoded.iter().map(|e| &e.payload[..]).collect();
        assert_eq!(payloads, vec![&b"alpha"[..], b"", b"gamma-gamma"]);
    }

    #[test]
    fn any_single_bit_flip_fails_the_checksum() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, &entries());
        let (_, crc) = parse_prefix(&buf).unwrap();
        for at in PREFIX_LEN..buf.len() {
            let mut copy = buf.clone();
            copy[at] ^= 0x10;
            assert!(
                !crc_matches(&copy[PREFIX_LEN..], crc),
                "flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn garbage_headers_are_rejected_without_panicking() {
        assert_eq!(parse_header(&[]), None);
        assert_eq!(parse_header(&[0u8; HEADER_LEN]), None);
        let mut buf = Vec::new();
        encode(&mut buf, u64::MAX - 1, &entries()[..1]);
        let mut body = buf[PREFIX_LEN..].to_vec();
        // count = 0 is never written
        body[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_header(&body), None);
        // an entry length pointing past the body is reported, not panicked on
        let mut buf = Vec::new();
        let header = encode(&mut buf, 0, &entries());
        let mut body = buf[PREFIX_LEN..].to_vec();
        body[HEADER_LEN + 16..HEADER_LEN + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        let body = Bytes::from(body);
        assert_eq!(
            validate_entries(&body, &header),
            Err("entry runs past the end of its batch")
        );
    }
}
