//! How one Kinesis record sits in a shard log entry's payload:
//! `partition key length (u16 BE) · partition key (UTF-8) · data`. The arrival timestamp is
//! the entry's timestamp and the sequence number derives from the entry's index.

use bytes::Bytes;

/// A record as stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub arrival_ms: u64,
    pub partition_key: String,
    pub data: Bytes,
}

pub fn encode(partition_key: &str, data: &[u8], out: &mut Vec<u8>) {
    let key = partition_key.as_bytes();
    // Partition keys are at most 256 characters (1,024 bytes of UTF-8), so u16 fits.
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(&key[..usize::from(key_len)]);
    out.extend_from_slice(data);
}

/// Splits a payload back into key and data; `None` for a payload this codec did not write.
pub fn decode(offset: u64, arrival_ms: u64, payload: Bytes) -> Option<StoredRecord> {
    let len_bytes: [u8; 2] = payload.get(..2)?.try_into().ok()?;
    let key_len = usize::from(u16::from_be_bytes(len_bytes));
    let key = payload.get(2..2 + key_len)?;
    let partition_key = std::str::from_utf8(key).ok()?.to_owned();
    Some(StoredRecord {
        offset,
        arrival_ms,
        partition_key,
        data: payload.slice(2 + key_len..),
    })
}

/// The records of one append in one buffer, encoded once where the write arrives and kept
/// as is in the shard's Raft log, on the wire to the other replicas and in the record log:
/// per record `payload length (u32 BE) · payload`, each payload in the encoding above. It
/// travels as one byte string (so a batch costs one copy to encode or decode, not one step
/// per record), and is checked whole when it is decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
    count: usize,
}

/// Why bytes are not a record batch.
#[derive(Debug, thiserror::Error)]
#[error("a record batch is malformed: {0}")]
pub struct BadBatch(&'static str);

impl Batch {
    /// Encodes `records` (partition key, data) in order.
    pub fn from_records<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Batch {
        let mut buf = Vec::new();
        let mut count = 0;
        for (key, data) in records {
            let len = 2 + key.len().min(usize::from(u16::MAX)) + data.len();
            // A record is at most 1 MiB of data and 1 KiB of key: u32 always fits.
            buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            encode(key, data, &mut buf);
            count += 1;
        }
        Batch {
            bytes: Bytes::from(buf),
            count,
        }
    }

    /// Checks `bytes` and takes them as a batch.
    pub fn parse(bytes: Bytes) -> Result<Batch, BadBatch> {
        let mut count = 0;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (payload, tail) = split_record(rest)?;
            let key_len = payload
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or(BadBatch("a record shorter than its key length"))?;
            let key = payload
                .get(2..2 + key_len)
                .ok_or(BadBatch("a partition key longer than its record"))?;
            std::str::from_utf8(key).map_err(|_| BadBatch("a partition key that is not UTF-8"))?;
            count += 1;
            rest = tail;
        }
        Ok(Batch { bytes, count })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes of partition keys and data, as throughput is counted.
    pub fn record_bytes(&self) -> usize {
        self.bytes.len() - 6 * self.count
    }

    /// Each record's payload in the record log's encoding (see [`decode`]).
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (payload, tail) = split_record(rest).ok()?;
            rest = tail;
            Some(payload)
        })
    }
}

/// One length-prefixed record off the front of `bytes`.
fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), BadBatch> {
    let len = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(BadBatch("a truncated record length"))?;
    let end = 4usize
        .checked_add(len)
        .filter(|end| *end <= bytes.len())
        .ok_or(BadBatch("a record longer than the batch"))?;
    Ok((&bytes[4..end], &bytes[end..]))
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch({} records, {} bytes)",
            self.count,
            self.bytes.len()
        )
    }
}

impl serde::Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> serde::Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Batch, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a record batch as a byte string")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
        }
        let bytes = deserializer.deserialize_byte_buf(Visitor)?;
        Batch::parse(bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_through_cbor_and_hands_out_record_payloads() {
        let records: Vec<(String, Vec<u8>)> = vec![
            ("k1".into(), b"one".to_vec()),
            ("clé".into(), Vec::new()),
            ("k3".into(), vec![0u8; 70_000]),
        ];
        let batch = Batch::from_records(records.iter().map(|(k, d)| (k.as_str(), &d[..])));
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.record_bytes(), 2 + 3 + 4 + 2 + 70_000);
        let mut cbor = Vec::new();
        ciborium::into_writer(&batch, &mut cbor).unwrap();
        let back: Batch = ciborium::from_reader(&cbor[..]).unwrap();
        assert_eq!(back, batch);
        let decoded: Vec<(String, Vec<u8>)> = back
            .payloads()
            .map(|p| {
                let r = decode(0, 0, Bytes::copy_from_slice(p)).unwrap();
                (r.partition_key, r.data.to_vec())
            })
            .collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn malformed_batches_are_refused() {
        let good = Batch::from_records([("k", &b"data"[..])]).bytes.to_vec();
        for cut in 1..good.len() {
            assert!(
                Batch::parse(Bytes::copy_from_slice(&good[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        // A key length running past its record.
        let mut long_key = good.clone();
        long_key[5] = 200;
        assert!(Batch::parse(Bytes::from(long_key)).is_err());
        // A key that is not UTF-8.
        let mut bad_utf8 = good.clone();
        bad_utf8[6] = 0xff;
        assert!(Batch::parse(Bytes::from(bad_utf8)).is_err());
        assert_eq!(Batch::parse(Bytes::from(good)).unwrap().len(), 1);
        assert_eq!(Batch::parse(Bytes::new()).unwrap().len(), 0);
    }

    #[test]
    fn round_trips_and_rejects_short_payloads() {
        let mut buf = Vec::new();
        encode("key-é", b"\x00\x01data", &mut buf);
        let record = decode(7, 9, Bytes::from(buf)).unwrap();
        assert_eq!(record.partition_key, "key-é");
        assert_eq!(&record.data[..], b"\x00\x01data");
        assert_eq!((record.offset, record.arrival_ms), (7, 9));
        assert!(decode(0, 0, Bytes::from_static(b"\x00")).is_none());
        assert!(decode(0, 0, Bytes::from_static(b"\x00\x09ab")).is_none());
    }
}
