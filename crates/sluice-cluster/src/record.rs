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

#[cfg(test)]
mod tests {
    use super::*;

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
