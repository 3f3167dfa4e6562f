//! Batch framing: how one appended batch of entries is laid out in a segment file.
//!
//! Pure code, no I/O. All integers are little endian.
//!
//! ```text
//! frame   := body_len:u32  crc:u32  header  payload
//!            body_len = byte length of header + payload
//!            crc      = CRC32C over header + payload, the bytes on disk
//! header  := version:u8 (=1)  flags:u8  reserved:[u8;2] (=0)  count:u32  base_index:u64
//!            first_term:u64  last_term:u64  first_ts:u64  last_ts:u64     (48 bytes)
//! flags   := bit 0 ENCRYPTED; the other bits are 0
//! payload := entry*                                    ENCRYPTED clear
//!          | nonce:[u8;12]  sealed(entry*)  tag:[u8;16]  ENCRYPTED set
//! entry   := term:u64  timestamp_ms:u64  payload_len:u32  payload
//! ```
//!
//! Entry `i` of the batch has index `base_index + i`. A frame is only trusted once its
//! checksum matches; the length field is covered indirectly, since a wrong length makes
//! the checksum run over the wrong bytes.
//!
//! Frames written before encryption existed had a zero flags byte (it was reserved), so
//! they read exactly as before. An encrypted frame seals its entries region with
//! AES-256-GCM under its segment's data key (see `crypto`): a fresh random nonce per
//! batch, the 48-byte header as associated data, so neither the entries nor the header
//! can be changed without failing authentication. The header stays in clear (indexes,
//! terms and timestamps serve the sparse indexes and recovery without the key); entries,
//! and so record keys and data, are only ever on disk sealed. The checksum still covers
//! every byte on disk, so torn writes are found without the key, and a frame that fails
//! authentication is treated as one that fails its checksum.
//!
use crate::crypto::{NONCE_LEN, SEAL_OVERHEAD, SegmentCipher};
use crate::error::StorageError;
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
/// Flag bit: the entries region is sealed (nonce, ciphertext, tag).
const FLAG_ENCRYPTED: u8 = 0x01;

/// The decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub count: u32,
    pub base_index: u64,
    pub first_term: u64,
    pub last_term: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    /// The entries are sealed under the segment's data key.
    pub encrypted: bool,
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
pub(crate) fn encoded_len(entries: &[EntryRef<'_>], encrypted: bool) -> Option<u64> {
    let fixed = FRAME_OVERHEAD + if encrypted { SEAL_OVERHEAD } else { 0 };
    entries.iter().try_fold(fixed as u64, |acc, entry| {
        acc.checked_add(ENTRY_OVERHEAD as u64)?
            .checked_add(entry.payload.len() as u64)
    })
}

/// Encodes `entries` as one frame into `buf` (cleared first), sealed under `cipher` when
/// one is given. The caller has checked that the batch is non-empty and below
/// [`MAX_FRAME_BYTES`]. Only sealing can fail (no randomness for the nonce).
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    base_index: u64,
    entries: &[EntryRef<'_>],
    cipher: Option<&SegmentCipher>,
) -> Result<BatchHeader, StorageError> {
    debug_assert!(!entries.is_empty());
    debug_assert!(encoded_len(entries, cipher.is_some()).is_some_and(|len| len <= MAX_FRAME_BYTES));
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
        encrypted: cipher.is_some(),
    };
    buf.clear();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    buf.push(FORMAT_VERSION);
    buf.push(if header.encrypted { FLAG_ENCRYPTED } else { 0 });
    buf.extend_from_slice(&[0u8; 2]);
    buf.extend_from_slice(&header.count.to_le_bytes());
    buf.extend_from_slice(&header.base_index.to_le_bytes());
    buf.extend_from_slice(&header.first_term.to_le_bytes());
    buf.extend_from_slice(&header.last_term.to_le_bytes());
    buf.extend_from_slice(&header.first_ts.to_le_bytes());
    buf.extend_from_slice(&header.last_ts.to_le_bytes());
    let sealed_from = PREFIX_LEN + HEADER_LEN + NONCE_LEN;
    if cipher.is_some() {
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
    }
    for entry in entries {
        buf.extend_from_slice(&entry.term.to_le_bytes());
        buf.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
        let len = u32::try_from(entry.payload.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(entry.payload);
    }
    if let Some(cipher) = cipher {
        let mut aad = [0u8; HEADER_LEN];
        aad.copy_from_slice(&buf[PREFIX_LEN..PREFIX_LEN + HEADER_LEN]);
        let (nonce, tag) = cipher.seal(&aad, &mut buf[sealed_from..])?;
        buf[sealed_from - NONCE_LEN..sealed_from].copy_from_slice(&nonce);
        buf.extend_from_slice(&tag);
    }
    let body_len = u32::try_from(buf.len() - PREFIX_LEN).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(&buf[PREFIX_LEN..]);
    buf[0..4].copy_from_slice(&body_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(header)
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
    if body.len() < HEADER_LEN
        || body[0] != FORMAT_VERSION
        || body[1] & !FLAG_ENCRYPTED != 0
        || body[2..4] != [0, 0]
    {
        return None;
    }
    let header = BatchHeader {
        count: read_u32(body, 4)?,
        base_index: read_u64(body, 8)?,
        first_term: read_u64(body, 16)?,
        last_term: read_u64(body, 24)?,
        first_ts: read_u64(body, 32)?,
        last_ts: read_u64(body, 40)?,
        encrypted: body[1] & FLAG_ENCRYPTED != 0,
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

/// Why [`open_body`] could not produce the entries of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The batch is encrypted and its segment has no data key.
    NoKey,
    /// The sealed region is malformed or fails authentication.
    Failed(&'static str),
}

/// The body of a checksum-verified frame with its entries in clear: the body itself for
/// a plaintext batch, the header followed by the opened entries for an encrypted one.
pub(crate) fn open_body(
    body: &Bytes,
    header: &BatchHeader,
    cipher: Option<&SegmentCipher>,
) -> Result<Bytes, OpenError> {
    if !header.encrypted {
        return Ok(body.clone());
    }
    let cipher = cipher.ok_or(OpenError::NoKey)?;
    if body.len() < HEADER_LEN + SEAL_OVERHEAD {
        return Err(OpenError::Failed("encrypted batch is too short"));
    }
    let (aad, sealed) = body.split_at(HEADER_LEN);
    let (nonce, sealed) = sealed.split_at(NONCE_LEN);
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(aad);
    out.extend_from_slice(sealed);
    let plain_len = cipher
        .open(nonce, aad, &mut out[HEADER_LEN..])
        .ok_or(OpenError::Failed("batch failed authentication"))?
        .len();
    out.truncate(HEADER_LEN + plain_len);
    Ok(Bytes::from(out))
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
        let header = encode(&mut buf, 41, &entries, None).unwrap();
        assert_eq!(Some(buf.len() as u64), encoded_len(&entries, false));
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
        encode(&mut buf, 0, &entries(), None).unwrap();
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
        encode(&mut buf, u64::MAX - 1, &entries()[..1], None).unwrap();
        let mut body = buf[PREFIX_LEN..].to_vec();
        // count = 0 is never written
        body[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_header(&body), None);
        // an entry length pointing past the body is reported, not panicked on
        let mut buf = Vec::new();
        let header = encode(&mut buf, 0, &entries(), None).unwrap();
        let mut body = buf[PREFIX_LEN..].to_vec();
        body[HEADER_LEN + 16..HEADER_LEN + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        let body = Bytes::from(body);
        assert_eq!(
            validate_entries(&body, &header),
            Err("entry runs past the end of its batch")
        );
    }

    fn cipher() -> SegmentCipher {
        use crate::keyring::{KINESIS_MANAGED_ALIAS, KeyProvider, LocalKeyring};
        let keys = LocalKeyring::ephemeral().unwrap();
        let master = keys.resolve(KINESIS_MANAGED_ALIAS).unwrap();
        SegmentCipher::generate(&keys, &master).unwrap()
    }

    /// Recomputes the checksum after a deliberate change, so only authentication can
    /// notice it.
    fn reseal_crc(buf: &mut [u8]) {
        let crc = crc32c::crc32c(&buf[PREFIX_LEN..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn encrypted_frames_round_trip_and_hide_their_entries() {
        let entries = entries();
        let cipher = cipher();
        let mut buf = Vec::new();
        let header = encode(&mut buf, 7, &entries, Some(&cipher)).unwrap();
        assert!(header.encrypted);
        assert_eq!(Some(buf.len() as u64), encoded_len(&entries, true));
        assert_eq!(buf[PREFIX_LEN + 1], FLAG_ENCRYPTED);
        for needle in [&b"alpha"[..], b"gamma-gamma"] {
            assert!(!buf.windows(needle.len()).any(|w| w == needle));
        }
        let (_, crc) = parse_prefix(&buf).unwrap();
        let body = Bytes::copy_from_slice(&buf[PREFIX_LEN..]);
        assert!(crc_matches(&body, crc));
        assert_eq!(parse_header(&body), Some(header));
        assert_eq!(open_body(&body, &header, None), Err(OpenError::NoKey));
        let plain = open_body(&body, &header, Some(&cipher)).unwrap();
        validate_entries(&plain, &header).unwrap();
        let payloads: Vec<Bytes> = EntryIter::new(&plain, &header)
            .map(|e| e.unwrap().payload)
            .collect();
        assert_eq!(payloads, vec![&b"alpha"[..], b"", b"gamma-gamma"]);
        // Two encodings of the same batch differ (fresh nonce).
        let mut again = Vec::new();
        encode(&mut again, 7, &entries, Some(&cipher)).unwrap();
        assert_ne!(buf, again);
    }

    #[test]
    fn tampering_with_an_encrypted_frame_fails_authentication() {
        let cipher = cipher();
        let mut buf = Vec::new();
        let header = encode(&mut buf, 7, &entries(), Some(&cipher)).unwrap();
        // Any byte of the header (the associated data), nonce, ciphertext or tag; the
        // flags byte is left alone (clearing it reads the frame as plaintext, which the
        // sealed bytes do not parse as, but that is entry validation, not the seal).
        for at in (PREFIX_LEN..buf.len()).filter(|at| *at != PREFIX_LEN + 1) {
            let mut copy = buf.clone();
            copy[at] ^= 0x01;
            reseal_crc(&mut copy);
            let body = Bytes::copy_from_slice(&copy[PREFIX_LEN..]);
            if let Some(parsed) = parse_header(&body) {
                assert!(
                    open_body(&body, &parsed, Some(&cipher)).is_err(),
                    "flip at {at} went unnoticed"
                );
            }
        }
        // The key of another segment does not open it.
        let body = Bytes::copy_from_slice(&buf[PREFIX_LEN..]);
        assert_eq!(
            open_body(&body, &header, Some(&self::cipher())),
            Err(OpenError::Failed("batch failed authentication"))
        );
    }

    #[test]
    fn plaintext_frames_keep_the_old_layout_and_unknown_flags_are_rejected() {
        let mut buf = Vec::new();
        let header = encode(&mut buf, 0, &entries(), None).unwrap();
        assert!(!header.encrypted);
        assert_eq!(&buf[PREFIX_LEN..PREFIX_LEN + 4], &[FORMAT_VERSION, 0, 0, 0]);
        let mut body = buf[PREFIX_LEN..].to_vec();
        body[1] = 0x02;
        assert_eq!(parse_header(&body), None);
        body[1] = 0;
        body[3] = 1;
        assert_eq!(parse_header(&body), None);
    }
}
