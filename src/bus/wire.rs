//! The Redis payload: a batch of already-encoded frames, each with a compact header (origin
//! instance, origin connection, kind). Several messages for one channel travel in one PUBLISH.
//!
//! ```text
//! "SG1" then per record: instance u64 BE | connection u64 BE | kind u8 (0 text, 1 binary) | len u32 BE | frame
//! ```
//! A payload without the magic is an external publish: plain JSON `{"event":E,"data":ANY}`.

use bytes::{BufMut, Bytes, BytesMut};

pub const MAGIC: &[u8; 3] = b"SG1";
const HEADER: usize = 8 + 8 + 1 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

/// One decoded record; `frame` shares the payload's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub instance: u64,
    pub origin: u64,
    pub kind: Kind,
    pub frame: Bytes,
}

/// Appends one record to a batch (starting it with the magic when empty).
pub fn push(batch: &mut BytesMut, instance: u64, origin: u64, kind: Kind, frame: &[u8]) {
    if batch.is_empty() {
        batch.put_slice(MAGIC);
    }
    batch.reserve(HEADER + frame.len());
    batch.put_u64(instance);
    batch.put_u64(origin);
    batch.put_u8(match kind {
        Kind::Text => 0,
        Kind::Binary => 1,
    });
    batch.put_u32(frame.len() as u32);
    batch.put_slice(frame);
}

/// Splits a batch into records; `None` if `payload` is not a syncgate batch or is truncated.
pub fn decode(payload: &Bytes) -> Option<Vec<Record>> {
    if !payload.starts_with(MAGIC) {
        return None;
    }
    let mut out = Vec::new();
    let mut i = MAGIC.len();
    while i < payload.len() {
        let h = payload.get(i..i + HEADER)?;
        let instance = u64::from_be_bytes(h[0..8].try_into().ok()?);
        let origin = u64::from_be_bytes(h[8..16].try_into().ok()?);
        let kind = match h[16] {
            0 => Kind::Text,
            1 => Kind::Binary,
            _ => return None,
        };
        let len = u32::from_be_bytes(h[17..21].try_into().ok()?) as usize;
        let start = i + HEADER;
        let end = start.checked_add(len)?;
        if end > payload.len() {
            return None;
        }
        out.push(Record { instance, origin, kind, frame: payload.slice(start..end) });
        i = end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut b = BytesMut::new();
        push(&mut b, 7, 42, Kind::Text, b"{\"a\":1}");
        push(&mut b, 7, 43, Kind::Binary, &[0, 1, 2]);
        let payload = b.freeze();
        let recs = decode(&payload).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            Record { instance: 7, origin: 42, kind: Kind::Text, frame: Bytes::from_static(b"{\"a\":1}") }
        );
        assert_eq!(recs[1].kind, Kind::Binary);
        assert!(decode(&Bytes::from_static(b"{\"event\":\"x\"}")).is_none());
        assert!(decode(&payload.slice(0..payload.len() - 1)).is_none());
        assert!(decode(&Bytes::from_static(b"SG1\x00")).is_none());
        assert_eq!(decode(&Bytes::from_static(b"SG1")).unwrap().len(), 0);
    }
}
