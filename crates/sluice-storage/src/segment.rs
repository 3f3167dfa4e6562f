//! Segment files, their sparse indexes, and the frame walker shared by reads and recovery.
//!
//! # On-disk layout
//!
//! One directory per log. It holds a run of segments; each segment covers a contiguous
//! range of indexes and is named by the first index it may hold (its base), zero-padded
//! to 20 digits:
//!
//! ```text
//! 00000000000000000000.log   batches, framed as described in `frame`
//! 00000000000000000000.idx   sparse offset index: (relative index:u32, file position:u32)*
//! 00000000000000000000.tix   sparse time index:   (first timestamp_ms:u64, relative index:u32)*
//! 00000000000000000000.key   only for a segment with encrypted batches: its data key,
//!                            wrapped by a master key (layout in `crypto`)
//! 00000000000000052113.log   the next segment starts where the previous one ends
//! ...
//! ```
//!
//! A segment gets a `.key` sidecar, durably, before its first encrypted batch is
//! written; its batches may mix plaintext (appended while the log's owner did not ask
//! for encryption) and encrypted ones, all of the latter under that one data key. A
//! segment whose batches would need a different master key is sealed first, so every
//! new segment gets a new data key under the newest version of its master key.
//!
//! Only the last segment is written to (the active segment); the others are sealed. A new
//! segment is created when the next batch would push the active one past
//! `LogConfig::segment_bytes`. Before that, the active segment is fdatasync'd, so a
//! sealed segment never has a torn tail; after creating the file the directory is fsynced.
//!
//! Index entries are sparse: a batch gets one (in both files, with the same relative
//! index) when at least `index_interval_bytes` were written since the previous entry, or
//! since the start of the segment. The first batch of a segment never has one (position
//! 0 is implied). Index files are hints: they are written without fsync, validated when
//! loaded, rebuilt from the log when they do not add up, and every frame a read lands on
//! is verified against its own header and checksum, so a bad index can cost a scan but
//! never returns wrong data.
//!
//! A truncation that cuts a batch in two writes the kept entries as a new segment named
//! by that batch's base (via a temporary `*.log.tmp` file and a rename) and then cuts the
//! previous segment at that batch. If a crash lands between the two steps, recovery sees
//! a segment whose frames run past the next segment's base and cuts them (the newer
//! segment supersedes the overlap). If the batch was encrypted, the kept entries are
//! sealed again under the same data key (with a fresh nonce), and a copy of the sidecar
//! is written for the new segment before its log file is renamed into place.
//!
//! All integers are little endian; positions fit in u32 because a segment file never
//! exceeds `max(segment_bytes, largest frame)`, both capped at 1 GiB.

use crate::crypto::SegmentCipher;
use crate::error::StorageError;
use crate::frame::{self, BatchHeader, EntryIter, FRAME_OVERHEAD, OpenError, PREFIX_LEN};
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const OFFSET_INDEX_EXT: &str = "idx";
pub(crate) const TIME_INDEX_EXT: &str = "tix";
pub(crate) const KEY_EXT: &str = "key";
pub(crate) const TMP_SUFFIX: &str = ".log.tmp";
pub(crate) const KEY_TMP_SUFFIX: &str = ".key.tmp";

const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// The files of one segment (the key sidecar exists only for encrypted segments).
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub idx: PathBuf,
    pub tix: PathBuf,
    pub key: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base: u64) -> Self {
        SegmentPaths {
            log: dir.join(format!("{base:020}.{LOG_EXT}")),
            idx: dir.join(format!("{base:020}.{OFFSET_INDEX_EXT}")),
            tix: dir.join(format!("{base:020}.{TIME_INDEX_EXT}")),
            key: dir.join(format!("{base:020}.{KEY_EXT}")),
        }
    }

    /// The temporary file a split segment is written to before it is renamed in place.
    pub fn tmp(dir: &Path, base: u64) -> PathBuf {
        dir.join(format!("{base:020}{TMP_SUFFIX}"))
    }
}

/// Parses `<20 digits>.<ext>` into the base index.
pub(crate) fn parse_file_name(name: &str, ext: &str) -> Option<u64> {
    let (stem, found_ext) = name.split_once('.')?;
    if found_ext != ext || stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One sparse index point: the batch starting at `pos` has base `segment base + rel`
/// and its first entry has timestamp `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel: u32,
    pub pos: u32,
    pub ts: u64,
}

/// The sparse offset and time index of one segment (both files hold the same points).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    pub entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// The last point at or before relative index `rel`.
    pub fn floor_by_rel(&self, rel: u64) -> Option<IndexEntry> {
        let at = self.entries.partition_point(|e| u64::from(e.rel) <= rel);
        at.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last point whose batch starts with a timestamp below `ts`.
    pub fn last_before_ts(&self, ts: u64) -> Option<IndexEntry> {
        let at = self.entries.partition_point(|e| e.ts < ts);
        at.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops every point at or beyond relative index `rel`.
    pub fn truncate_rel(&mut self, rel: u64) {
        self.entries.retain(|e| u64::from(e.rel) < rel);
    }

    /// Whether the points are plausible for a segment of `count` entries and `size` bytes.
    pub fn is_consistent(&self, count: u64, size: u64) -> bool {
        let mut prev: Option<IndexEntry> = None;
        for e in &self.entries {
            if e.rel == 0 || e.pos == 0 || u64::from(e.rel) >= count || u64::from(e.pos) >= size {
                return false;
            }
            if let Some(p) = prev
                && (e.rel <= p.rel || e.pos <= p.pos || e.ts < p.ts)
            {
                return false;
            }
            prev = Some(*e);
        }
        true
    }

    pub fn encode_offsets(entries: &[IndexEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
        for e in entries {
            out.extend_from_slice(&e.rel.to_le_bytes());
            out.extend_from_slice(&e.pos.to_le_bytes());
        }
        out
    }

    pub fn encode_times(entries: &[IndexEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
        for e in entries {
            out.extend_from_slice(&e.ts.to_le_bytes());
            out.extend_from_slice(&e.rel.to_le_bytes());
        }
        out
    }

    /// Decodes the two index files; `None` if they are torn or disagree.
    pub fn decode(offsets: &[u8], times: &[u8]) -> Option<SparseIndex> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_LEN)
            || !times.len().is_multiple_of(TIME_ENTRY_LEN)
        {
            return None;
        }
        if offsets.len() / OFFSET_ENTRY_LEN != times.len() / TIME_ENTRY_LEN {
            return None;
        }
        let mut entries = Vec::with_capacity(offsets.len() / OFFSET_ENTRY_LEN);
        for (o, t) in offsets
            .chunks_exact(OFFSET_ENTRY_LEN)
            .zip(times.chunks_exact(TIME_ENTRY_LEN))
        {
            let rel = u32::from_le_bytes(o.get(0..4)?.try_into().ok()?);
            let pos = u32::from_le_bytes(o.get(4..8)?.try_into().ok()?);
            let ts = u64::from_le_bytes(t.get(0..8)?.try_into().ok()?);
            let time_rel = u32::from_le_bytes(t.get(8..12)?.try_into().ok()?);
            if rel != time_rel {
                return None;
            }
            entries.push(IndexEntry { rel, pos, ts });
        }
        Some(SparseIndex { entries })
    }
}

/// Decides where index points go; the same rule is applied when appending and when
/// rebuilding, so a rebuilt index equals the one written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexBuilder {
    interval: u64,
    since_last: u64,
}

impl IndexBuilder {
    pub fn new(interval: u32) -> Self {
        IndexBuilder {
            interval: u64::from(interval),
            since_last: 0,
        }
    }

    /// Records a batch of `frame_len` bytes starting at `pos`; returns the point to add.
    pub fn observe(
        &mut self,
        rel: u64,
        pos: u64,
        first_ts: u64,
        frame_len: u64,
    ) -> Option<IndexEntry> {
        let point = if pos > 0 && self.since_last >= self.interval {
            self.since_last = 0;
            match (u32::try_from(rel), u32::try_from(pos)) {
                (Ok(rel), Ok(pos)) => Some(IndexEntry {
                    rel,
                    pos,
                    ts: first_ts,
                }),
                _ => None,
            }
        } else {
            None
        };
        self.since_last = self.since_last.saturating_add(frame_len);
        point
    }
}

/// Reads the index files of a segment; `None` if either is missing or unreadable.
pub(crate) fn read_index_files(paths: &SegmentPaths) -> Option<SparseIndex> {
    let offsets = std::fs::read(&paths.idx).ok()?;
    let times = std::fs::read(&paths.tix).ok()?;
    SparseIndex::decode(&offsets, &times)
}

/// Replaces both index files with `index` (no fsync: they are hints).
pub(crate) fn write_index_files(
    paths: &SegmentPaths,
    index: &SparseIndex,
) -> Result<(), StorageError> {
    std::fs::write(&paths.idx, SparseIndex::encode_offsets(&index.entries))
        .map_err(|e| StorageError::io("write offset index", &paths.idx, e))?;
    std::fs::write(&paths.tix, SparseIndex::encode_times(&index.entries))
        .map_err(|e| StorageError::io("write time index", &paths.tix, e))?;
    Ok(())
}

/// Appends `entries` to the index files, which currently hold `persisted` points.
pub(crate) fn append_index_files(
    paths: &SegmentPaths,
    persisted: usize,
    entries: &[IndexEntry],
) -> Result<(), StorageError> {
    let write_at = |path: &Path, at: usize, bytes: Vec<u8>, op: &'static str| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StorageError::io(op, path, e))?;
        file.set_len(at as u64)
            .and_then(|()| file.write_all_at(&bytes, at as u64))
            .map_err(|e| StorageError::io(op, path, e))
    };
    write_at(
        &paths.idx,
        persisted * OFFSET_ENTRY_LEN,
        SparseIndex::encode_offsets(entries),
        "append offset index",
    )?;
    write_at(
        &paths.tix,
        persisted * TIME_ENTRY_LEN,
        SparseIndex::encode_times(entries),
        "append time index",
    )
}

/// Positional reads through a window of one file, so walking many small frames costs
/// one syscall per window rather than two per frame.
pub(crate) struct ChunkReader<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    chunk: Bytes,
    chunk_pos: u64,
    chunk_size: usize,
}

impl<'a> ChunkReader<'a> {
    /// Reads never go past `end` (the bytes known to be written).
    pub fn new(file: &'a File, path: &'a Path, end: u64, chunk_size: usize) -> Self {
        ChunkReader {
            file,
            path,
            end,
            chunk: Bytes::new(),
            chunk_pos: 0,
            chunk_size: chunk_size.max(4096),
        }
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// The bytes `[pos, pos + len)`, or `None` if they reach past `end`.
    pub fn get(&mut self, pos: u64, len: usize) -> Result<Option<Bytes>, StorageError> {
        let Some(stop) = pos.checked_add(len as u64) else {
            return Ok(None);
        };
        if stop > self.end {
            return Ok(None);
        }
        let chunk_end = self.chunk_pos + self.chunk.len() as u64;
        if pos < self.chunk_pos || stop > chunk_end {
            let available = self.end - pos;
            let want = (len.max(self.chunk_size) as u64).min(available);
            let want = usize::try_from(want).unwrap_or(len);
            let mut buf = vec![0u8; want];
            self.file.read_exact_at(&mut buf, pos).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    StorageError::corrupt(self.path, pos, "segment file is shorter than expected")
                } else {
                    StorageError::io("read segment", self.path, e)
                }
            })?;
            self.chunk = Bytes::from(buf);
            self.chunk_pos = pos;
        }
        let from = usize::try_from(pos - self.chunk_pos).unwrap_or(usize::MAX);
        Ok(self
            .chunk
            .get(from..from + len)
            .map(|_| self.chunk.slice(from..from + len)))
    }
}

/// A frame as found on disk, before any decision about it.
pub(crate) struct RawFrame {
    pub pos: u64,
    /// Prefix included.
    pub total_len: u64,
    pub header: BatchHeader,
    /// Header and entries: as on disk from `read_frame`, with the entries opened (in
    /// clear) from a `FrameWalker`.
    pub body: Bytes,
    pub crc_ok: bool,
}

impl RawFrame {
    pub fn end_pos(&self) -> u64 {
        self.pos + self.total_len
    }

    pub fn entries(&self) -> EntryIter<'_> {
        EntryIter::new(&self.body, &self.header)
    }
}

/// What sits at a position of a segment file.
pub(crate) enum FrameAt {
    Frame(RawFrame),
    /// The frame would run past the written bytes (a torn write, or the end).
    Incomplete,
    /// The bytes cannot be a frame.
    Malformed(&'static str),
}

/// Reads the frame at `pos`. Only I/O failures are errors.
pub(crate) fn read_frame(reader: &mut ChunkReader<'_>, pos: u64) -> Result<FrameAt, StorageError> {
    let Some(head) = reader.get(pos, FRAME_OVERHEAD)? else {
        return Ok(FrameAt::Incomplete);
    };
    let Some((body_len, crc)) = frame::parse_prefix(&head) else {
        return Ok(FrameAt::Malformed("unreadable frame prefix"));
    };
    let total_len = PREFIX_LEN as u64 + u64::from(body_len);
    if total_len < FRAME_OVERHEAD as u64 || total_len > frame::MAX_FRAME_BYTES {
        return Ok(FrameAt::Malformed("frame length out of range"));
    }
    let Some(header) = frame::parse_header(&head[PREFIX_LEN..]) else {
        return Ok(FrameAt::Malformed("unreadable batch header"));
    };
    let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
    let Some(body) = reader.get(pos + PREFIX_LEN as u64, body_len)? else {
        return Ok(FrameAt::Incomplete);
    };
    let crc_ok = frame::crc_matches(&body, crc);
    Ok(FrameAt::Frame(RawFrame {
        pos,
        total_len,
        header,
        body,
        crc_ok,
    }))
}

/// Why a recovery scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Every byte up to the end of the file was a valid chain of frames.
    Eof,
    /// The chain reached the requested boundary index and bytes follow it (they belong
    /// to a newer segment that supersedes them).
    Boundary,
    /// The bytes at `end_pos` are not a valid continuation of the chain.
    Invalid(&'static str),
}

/// The result of walking a segment file from a known frame.
#[derive(Debug, Clone)]
pub(crate) struct ScanOutcome {
    /// The position after the last accepted frame.
    pub end_pos: u64,
    /// The index after the last accepted frame.
    pub next_index: u64,
    pub max_ts: Option<u64>,
    /// Index points of the accepted frames (meaningful when the scan started at 0).
    pub index: SparseIndex,
    pub builder: IndexBuilder,
    /// Positions of frames that failed their checksum but were kept because a valid
    /// chain continues after them (media damage, not a torn write).
    pub corrupt_frames: Vec<u64>,
    pub stop: ScanStop,
}

/// Parameters of [`scan`].
pub(crate) struct ScanFrom {
    pub segment_base: u64,
    pub start_pos: u64,
    pub start_index: u64,
    /// Stop at this index (the base of the next segment), if any.
    pub boundary: Option<u64>,
    pub index_interval: u32,
    /// The segment's data key, if it has a sidecar.
    pub cipher: Option<Arc<SegmentCipher>>,
}

/// Whether a frame as read is sound: its checksum matches and, if it is encrypted, it
/// passes authentication. The inner error names what failed. An encrypted frame in a
/// segment without a data key is an error of its own: nothing on disk explains it (the
/// sidecar is durable before the first encrypted batch), so it is never cut as a torn
/// tail.
fn frame_sound(
    frame: &RawFrame,
    cipher: Option<&SegmentCipher>,
    path: &Path,
) -> Result<Result<Bytes, &'static str>, StorageError> {
    if !frame.crc_ok {
        return Ok(Err("checksum mismatch"));
    }
    match frame::open_body(&frame.body, &frame.header, cipher) {
        Ok(body) => Ok(Ok(body)),
        Err(OpenError::Failed(reason)) => Ok(Err(reason)),
        Err(OpenError::NoKey) => Err(StorageError::corrupt(
            path,
            frame.pos,
            "encrypted batch in a segment without a key sidecar",
        )),
    }
}

/// Walks frames from `from.start_pos`, checking length, header, chain, checksum and, for
/// encrypted frames, authentication (a frame that fails it counts as one whose checksum
/// fails).
///
/// A frame whose checksum fails is kept (and reported in `corrupt_frames`) only when
/// its header continues the chain and the frame after it is valid and continues the
/// chain too, or it ends the segment exactly at `boundary`: that is damage in the middle
/// of the log, which reads report as corruption. Otherwise the scan stops there: a torn
/// tail, which recovery cuts.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    file_len: u64,
    from: &ScanFrom,
) -> Result<ScanOutcome, StorageError> {
    let mut reader = ChunkReader::new(file, path, file_len, 1 << 20);
    let mut out = ScanOutcome {
        end_pos: from.start_pos,
        next_index: from.start_index,
        max_ts: None,
        index: SparseIndex::default(),
        builder: IndexBuilder::new(from.index_interval),
        corrupt_frames: Vec::new(),
        stop: ScanStop::Eof,
    };
    loop {
        if let Some(boundary) = from.boundary
            && out.next_index >= boundary
        {
            out.stop = if out.end_pos == file_len {
                ScanStop::Eof
            } else {
                ScanStop::Boundary
            };
            return Ok(out);
        }
        if out.end_pos == file_len {
            out.stop = ScanStop::Eof;
            return Ok(out);
        }
        let frame = match read_frame(&mut reader, out.end_pos)? {
            FrameAt::Frame(frame) => frame,
            FrameAt::Incomplete => {
                out.stop = ScanStop::Invalid("truncated frame");
                return Ok(out);
            }
            FrameAt::Malformed(reason) => {
                out.stop = ScanStop::Invalid(reason);
                return Ok(out);
            }
        };
        if frame.header.base_index != out.next_index {
            out.stop = ScanStop::Invalid("batch does not continue the index sequence");
            return Ok(out);
        }
        if let Some(boundary) = from.boundary
            && frame.header.end_index() > boundary
        {
            out.stop = ScanStop::Invalid("batch spans the next segment's base");
            return Ok(out);
        }
        let cipher = from.cipher.as_deref();
        match frame_sound(&frame, cipher, path)? {
            Ok(body) => {
                if let Err(reason) = frame::validate_entries(&body, &frame.header) {
                    out.stop = ScanStop::Invalid(reason);
                    return Ok(out);
                }
            }
            Err(failure) => {
                let continues = if frame.end_pos() == file_len {
                    from.boundary == Some(frame.header.end_index())
                } else {
                    match read_frame(&mut reader, frame.end_pos())? {
                        FrameAt::Frame(next) => {
                            next.header.base_index == frame.header.end_index()
                                && frame_sound(&next, cipher, path)?.is_ok_and(|body| {
                                    frame::validate_entries(&body, &next.header).is_ok()
                                })
                        }
                        FrameAt::Incomplete | FrameAt::Malformed(_) => false,
                    }
                };
                if !continues {
                    out.stop = ScanStop::Invalid(failure);
                    return Ok(out);
                }
                out.corrupt_frames.push(frame.pos);
            }
        }
        let rel = frame.header.base_index - from.segment_base;
        if let Some(point) =
            out.builder
                .observe(rel, frame.pos, frame.header.first_ts, frame.total_len)
        {
            out.index.entries.push(point);
        }
        out.max_ts = Some(
            out.max_ts
                .map_or(frame.header.last_ts, |m| m.max(frame.header.last_ts)),
        );
        out.end_pos = frame.end_pos();
        out.next_index = frame.header.end_index();
    }
}

/// Walks verified frames of one segment for reads: every frame is checked against its
/// checksum and the index chain, and any mismatch is an error naming the position.
/// Encrypted frames are opened with the segment's data key (their bodies come back in
/// clear); one that fails authentication is corrupt like one that fails its checksum.
pub(crate) struct FrameWalker<'a> {
    reader: ChunkReader<'a>,
    path: &'a Path,
    pos: u64,
    expected: u64,
    cipher: Option<Arc<SegmentCipher>>,
    /// Return frames whose checksum fails instead of an error (truncation cuts before a
    /// damaged batch and needs only its position).
    tolerate_checksums: bool,
}

impl<'a> FrameWalker<'a> {
    pub fn new(
        reader: ChunkReader<'a>,
        path: &'a Path,
        pos: u64,
        expected: u64,
        cipher: Option<Arc<SegmentCipher>>,
    ) -> Self {
        FrameWalker {
            reader,
            path,
            pos,
            expected,
            cipher,
            tolerate_checksums: false,
        }
    }

    /// Lets [`next_frame`](Self::next_frame) return frames that fail their checksum.
    pub fn tolerate_checksums(&mut self) {
        self.tolerate_checksums = true;
    }

    /// Moves back (or forward) to a frame boundary already known to be valid.
    pub fn rewind(&mut self, pos: u64, expected: u64) {
        self.pos = pos;
        self.expected = expected;
    }

    /// The index the next frame must start with.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// The next verified frame, or `None` at the end of the written bytes.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, StorageError> {
        if self.pos >= self.reader.end() {
            return Ok(None);
        }
        let mut frame = match read_frame(&mut self.reader, self.pos)? {
            FrameAt::Frame(frame) => frame,
            FrameAt::Incomplete => {
                return Err(StorageError::corrupt(
                    self.path,
                    self.pos,
                    "truncated frame",
                ));
            }
            FrameAt::Malformed(reason) => {
                return Err(StorageError::corrupt(self.path, self.pos, reason));
            }
        };
        if !frame.crc_ok && !self.tolerate_checksums {
            return Err(StorageError::corrupt(
                self.path,
                self.pos,
                "checksum mismatch",
            ));
        }
        if frame.header.base_index != self.expected {
            return Err(StorageError::corrupt(
                self.path,
                self.pos,
                "batch does not continue the index sequence",
            ));
        }
        if frame.header.encrypted {
            frame.body = frame_sound(&frame, self.cipher.as_deref(), self.path)?
                .map_err(|reason| StorageError::corrupt(self.path, self.pos, reason))?;
        }
        self.pos = frame.end_pos();
        self.expected = frame.header.end_index();
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let paths = SegmentPaths::new(Path::new("/d"), 52_113);
        assert_eq!(paths.log, Path::new("/d/00000000000000052113.log"));
        assert_eq!(paths.idx, Path::new("/d/00000000000000052113.idx"));
        assert_eq!(paths.tix, Path::new("/d/00000000000000052113.tix"));
        assert_eq!(paths.key, Path::new("/d/00000000000000052113.key"));
        assert_eq!(
            parse_file_name("00000000000000052113.log", LOG_EXT),
            Some(52_113)
        );
        assert_eq!(parse_file_name("00000000000000052113.idx", LOG_EXT), None);
        assert_eq!(parse_file_name("52113.log", LOG_EXT), None);
        assert_eq!(parse_file_name("0000000000000005211x.log", LOG_EXT), None);
        assert_eq!(
            parse_file_name("00000000000000052113.log.tmp", LOG_EXT),
            None
        );
    }

    #[test]
    fn index_files_round_trip_and_reject_torn_files() {
        let index = SparseIndex {
            entries: vec![
                IndexEntry {
                    rel: 3,
                    pos: 5000,
                    ts: 7,
                },
                IndexEntry {
                    rel: 9,
                    pos: 9100,
                    ts: 7,
                },
                IndexEntry {
                    rel: 20,
                    pos: 14_000,
                    ts: 11,
                },
            ],
        };
        let offsets = SparseIndex::encode_offsets(&index.entries);
        let times = SparseIndex::encode_times(&index.entries);
        assert_eq!(SparseIndex::decode(&offsets, &times), Some(index.clone()));
        assert_eq!(
            SparseIndex::decode(&offsets[..offsets.len() - 1], &times),
            None
        );
        assert_eq!(SparseIndex::decode(&offsets[..8], &times), None);
        assert!(index.is_consistent(21, 15_000));
        assert!(!index.is_consistent(20, 15_000));
        assert!(!index.is_consistent(21, 14_000));
        assert_eq!(index.floor_by_rel(2), None);
        assert_eq!(index.floor_by_rel(9).map(|e| e.pos), Some(9100));
        assert_eq!(index.floor_by_rel(19).map(|e| e.pos), Some(9100));
        assert_eq!(index.last_before_ts(7), None);
        assert_eq!(index.last_before_ts(8).map(|e| e.rel), Some(9));
        assert_eq!(index.last_before_ts(100).map(|e| e.rel), Some(20));
    }

    #[test]
    fn builder_places_points_every_interval() {
        let mut builder = IndexBuilder::new(100);
        let mut points = Vec::new();
        let mut pos = 0;
        for rel in 0..10u64 {
            points.extend(builder.observe(rel, pos, rel, 60));
            pos += 60;
        }
        let rels: Vec<u32> = points.iter().map(|p| p.rel).collect();
        assert_eq!(rels, vec![2, 4, 6, 8]);
    }
}
