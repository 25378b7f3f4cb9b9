//! Outbound frames, written by one small builder ([`FrameWriter`]) straight into one buffer and
//! frozen into `Bytes` (UTF-8 by construction) so that fan-out hands out clones, never copies.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{ErrorCode, RequestId, Signature};

/// An encoded text frame: cloning it is a reference-count increment.
pub type Encoded = Utf8Bytes;

/// Appends `s` as a JSON string literal: the one place outbound strings are escaped.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// One outbound frame under construction: `{"type":T` and then its fields, in call order, in a
/// buffer whose capacity the caller reserves once. Keys are trusted ASCII (never escaped);
/// string values go through [`json_str`]; `raw` values must already be JSON text.
///
/// `FrameWriter::new("pong", 40).num("ts", ts).id(id).finish()` → `{"type":"pong","ts":1,"id":7}`.
#[must_use]
pub struct FrameWriter {
    out: Vec<u8>,
}

impl FrameWriter {
    /// Starts `{"type":"<kind>"` in a buffer of `capacity` bytes. `kind` is written as is.
    #[inline]
    pub fn new(kind: &str, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'"');
        FrameWriter { out }
    }

    /// `,"key":` — no comma right after an opening `{` or `[`.
    #[inline]
    fn key(&mut self, key: &str) {
        if !matches!(self.out.last(), Some(b'{' | b'[')) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string field, escaped.
    #[inline]
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        json_str(&mut self.out, value);
        self
    }

    /// A string field when `value` is `Some`.
    #[inline]
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// A field whose value is already JSON text (a payload, a literal), copied as is.
    #[inline]
    pub fn raw(mut self, key: &str, json: &[u8]) -> Self {
        self.key(key);
        self.out.extend_from_slice(json);
        self
    }

    /// A non-negative integer field.
    #[inline]
    pub fn num(mut self, key: &str, n: u64) -> Self {
        self.key(key);
        push_u64(&mut self.out, n);
        self
    }

    /// A boolean field when `value` is `Some`.
    #[inline]
    pub fn opt_bool(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(true) => self.raw(key, b"true"),
            Some(false) => self.raw(key, b"false"),
            None => self,
        }
    }

    /// The request's `"id"`, echoed verbatim (its JSON text), when there is one.
    #[inline]
    pub fn id(self, id: Option<&str>) -> Self {
        match id {
            Some(id) => self.raw("id", id.as_bytes()),
            None => self,
        }
    }

    /// A nested object `"key":{…}` whose fields `fields` writes.
    #[inline]
    pub fn obj(mut self, key: &str, fields: impl FnOnce(Self) -> Self) -> Self {
        self.key(key);
        self.out.push(b'{');
        let mut w = fields(self);
        w.out.push(b'}');
        w
    }

    /// An array of objects `"key":[{…},…]`, one per item, whose fields `fields` writes.
    #[inline]
    pub fn objs<T>(
        mut self,
        key: &str,
        items: impl Iterator<Item = T>,
        mut fields: impl FnMut(Self, T) -> Self,
    ) -> Self {
        self.key(key);
        self.out.push(b'[');
        for item in items {
            if self.out.last() != Some(&b'[') {
                self.out.push(b',');
            }
            self.out.push(b'{');
            self = fields(self, item);
            self.out.push(b'}');
        }
        self.out.push(b']');
        self
    }

    /// Applies `f` (a group of fields shared by several frames).
    #[inline]
    pub fn with(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }

    /// Closes the object and freezes the buffer.
    #[inline]
    pub fn finish(mut self) -> Encoded {
        self.out.push(b'}');
        // Every writer emits valid UTF-8 (ASCII punctuation plus escaped Rust strings and
        // already-valid JSON), so this conversion only fails on a bug.
        Utf8Bytes::try_from(Bytes::from(self.out))
            .unwrap_or_else(|_| Utf8Bytes::from_static("{\"type\":\"error\",\"code\":\"internal\"}"))
    }
}

/// A durable channel's position of an event: its `seq` and the client's `msg_id`.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub seq: u64,
    pub msg_id: Option<&'a str>,
}

const EVENT_PREFIX: &[u8] = b"{\"type\":\"event\",\"channel\":\"";

/// The shared shape of `event` frames; `from` is `None` for the server. Durable events carry
/// `"seq"` right after the channel (so [`event_seq`] finds it without parsing) and `msg_id`; signed
/// events carry the sender's `public_key` in `from` and `nonce`, `sig_ts`, `sig` at the end.
#[inline]
fn event_frame(
    channel: &str,
    event: &str,
    data: &[u8],
    from: Option<(&str, &str)>,
    ts: u64,
    stamp: Option<Stamp<'_>>,
    sig: Option<&Signature>,
) -> Encoded {
    let from_len = from.map(|(u, d)| u.len() + d.len()).unwrap_or(0);
    let stamp_len = stamp.map(|s| 40 + s.msg_id.map_or(0, str::len)).unwrap_or(0);
    let sig_len = sig.map_or(0, |s| 96 + s.nonce.len() + s.sig.len() + s.public_key.len());
    let capacity = 96 + channel.len() + event.len() + data.len() + from_len + stamp_len + sig_len;
    let mut w = FrameWriter::new("event", capacity).str("channel", channel);
    if let Some(st) = stamp {
        w = w.num("seq", st.seq);
    }
    let w = w
        .str("event", event)
        .raw("data", data)
        .obj("from", |f| match from {
            Some((user_id, device_id)) => {
                f.str("user_id", user_id).str("device_id", device_id).opt_str("public_key", sig.map(|s| &*s.public_key))
            }
            None => f.str("user_id", "server"),
        })
        .num("ts", ts)
        .opt_str("msg_id", stamp.and_then(|s| s.msg_id));
    match sig {
        Some(s) => w.str("nonce", &s.nonce).num("sig_ts", s.sig_ts).str("sig", &s.sig).finish(),
        None => w.finish(),
    }
}

/// `{"type":"event","channel":C,"event":E,"data":D,"from":{"user_id":U,"device_id":D},"ts":MS}`.
/// `data` must already be JSON text.
/// The header of an unmasked, unfragmented server text frame of `len` payload bytes
/// (RFC 6455 §5.2): the bytes in `out` and how many there are. A server frame is never masked,
/// so this depends on the length alone: the connection writer sends it from the stack before the
/// payload every recipient shares (`ws::session::writer`).
pub fn text_frame_header(len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x81; // FIN + text
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

pub fn event(channel: &str, event: &str, data: &[u8], user_id: &str, device_id: &str, ts: u64) -> Encoded {
    event_frame(channel, event, data, Some((user_id, device_id)), ts, None, None)
}

/// A signed client event (a signed namespace):
/// `{"type":"event",…,"from":{"user_id":U,"device_id":D,"public_key":K},"ts":MS,"nonce":N,"sig_ts":T,"sig":S}`.
pub fn signed_event(
    channel: &str,
    event: &str,
    data: &[u8],
    user_id: &str,
    device_id: &str,
    ts: u64,
    sig: &Signature,
) -> Encoded {
    event_frame(channel, event, data, Some((user_id, device_id)), ts, None, Some(sig))
}

/// An `event` published by the server (HTTP API, external Redis publisher):
/// `"from":{"user_id":"server"}`.
pub fn server_event(channel: &str, event: &str, data: &[u8], ts: u64) -> Encoded {
    event_frame(channel, event, data, None, ts, None, None)
}

/// A durable channel's event: `{"type":"event","channel":C,"seq":N,…,"msg_id":M}`. `from` is
/// `None` for the server ("from":{"user_id":"server"}); `sig` for a signed event.
pub fn durable_event(
    channel: &str,
    event: &str,
    data: &[u8],
    from: Option<(&str, &str)>,
    ts: u64,
    stamp: Stamp<'_>,
    sig: Option<&Signature>,
) -> Encoded {
    event_frame(channel, event, data, from, ts, Some(stamp), sig)
}

/// The channel and `seq` of a durable event frame (`None` for any other frame). Cheap: channel
/// names never need escaping and `seq` directly follows the channel.
pub fn event_seq(frame: &[u8]) -> Option<(&[u8], u64)> {
    let rest = frame.strip_prefix(EVENT_PREFIX)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let (channel, rest) = rest.split_at(end);
    let digits = rest.strip_prefix(b"\",\"seq\":")?;
    let mut n: u64 = 0;
    let mut any = false;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some((channel, n))
}

/// The reply to a durable publish, after the event is committed:
/// `{"type":"ack","id":…,"channel":C,"seq":N,"msg_id":M,"duplicate":true}` (`duplicate` only for
/// a repeated `msg_id`, which gets its original `seq`).
pub fn durable_ack(id: &RequestId, channel: &str, seq: u64, msg_id: Option<&str>, duplicate: bool) -> Encoded {
    FrameWriter::new("ack", 64 + channel.len() + msg_id.map_or(0, str::len))
        .id(id.as_deref())
        .str("channel", channel)
        .num("seq", seq)
        .opt_str("msg_id", msg_id)
        .opt_bool("duplicate", duplicate.then_some(true))
        .finish()
}

/// A durable channel's state for `subscribed` / `welcome`: the latest `seq`, this device's read
/// position, and — after a replay request — whether every missed event was replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub seq: u64,
    pub read_seq: u64,
    pub recovered: Option<bool>,
}

/// `"seq":N,"read_seq":R,"recovered":B` (`recovered` only after a replay request).
fn stream_fields(w: FrameWriter, st: &StreamState) -> FrameWriter {
    w.num("seq", st.seq).num("read_seq", st.read_seq).opt_bool("recovered", st.recovered)
}

/// `{"type":"subscribed","channel":C,"seq":N,"read_seq":R,"recovered":B,"id":…}` for a durable
/// channel.
pub fn subscribed_durable(channel: &str, st: &StreamState, id: &RequestId) -> Encoded {
    FrameWriter::new("subscribed", 96 + channel.len())
        .str("channel", channel)
        .with(|w| stream_fields(w, st))
        .id(id.as_deref())
        .finish()
}

/// The reply to a client's read-position `ack` that carried an `id`:
/// `{"type":"ack","id":…,"channel":C,"read_seq":N}`.
pub fn read_ack(id: &RequestId, channel: &str, read_seq: u64) -> Encoded {
    FrameWriter::new("ack", 64 + channel.len())
        .id(id.as_deref())
        .str("channel", channel)
        .num("read_seq", read_seq)
        .finish()
}

/// `{"type":"error","code":K,"message":M,"id":…}`.
pub fn error(code: ErrorCode, message: &str, id: &RequestId) -> Encoded {
    FrameWriter::new("error", 64 + message.len())
        .str("code", code.as_str())
        .str("message", message)
        .id(id.as_deref())
        .finish()
}

/// A reply about one channel: `{"type":T,"channel":C,"id":…}` (subscribed, unsubscribed).
pub fn channel_reply(kind: &str, channel: &str, id: &RequestId) -> Encoded {
    FrameWriter::new(kind, 48 + channel.len()).str("channel", channel).id(id.as_deref()).finish()
}

/// `{"type":"ack","id":…,"channel":C}`.
pub fn ack(id: &str, channel: &str) -> Encoded {
    FrameWriter::new("ack", 40 + id.len() + channel.len()).id(Some(id)).str("channel", channel).finish()
}

/// `{"type":"join"|"leave","channel":C,"user_id":U,"device_id":D}`.
pub fn membership(kind: &str, channel: &str, user_id: &str, device_id: &str) -> Encoded {
    FrameWriter::new(kind, 64 + channel.len() + user_id.len() + device_id.len())
        .str("channel", channel)
        .str("user_id", user_id)
        .str("device_id", device_id)
        .finish()
}

/// `{"type":"typing","channel":C,"user_id":U,"device_id":D,"state":"start"|"stop"}`.
pub fn typing(channel: &str, user_id: &str, device_id: &str, typing: bool) -> Encoded {
    FrameWriter::new("typing", 80 + channel.len() + user_id.len() + device_id.len())
        .str("channel", channel)
        .str("user_id", user_id)
        .str("device_id", device_id)
        .str("state", if typing { "start" } else { "stop" })
        .finish()
}

/// `{"type":"presence","channel":C,"members":[{"user_id":U,"device_id":D},…],"id":…}`.
pub fn presence<'a>(channel: &str, members: impl Iterator<Item = (&'a str, &'a str)>, id: &RequestId) -> Encoded {
    FrameWriter::new("presence", 128)
        .str("channel", channel)
        .objs("members", members, |m, (u, d)| m.str("user_id", u).str("device_id", d))
        .id(id.as_deref())
        .finish()
}

/// `{"type":"pong","ts":MS,"id":…}`.
pub fn pong(ts: u64, id: &RequestId) -> Encoded {
    FrameWriter::new("pong", 40).num("ts", ts).id(id.as_deref()).finish()
}

/// The `welcome` frame sent once after authentication; `stream` when the user channel is durable.
pub fn welcome(
    user_id: &str,
    device_id: &str,
    conn_id: &str,
    heartbeat_ms: u64,
    max_message_bytes: u64,
    stream: Option<&StreamState>,
) -> Encoded {
    FrameWriter::new("welcome", 160)
        .str("user_id", user_id)
        .str("device_id", device_id)
        .str("conn_id", conn_id)
        .num("heartbeat_ms", heartbeat_ms)
        .num("max_message_bytes", max_message_bytes)
        .with(|w| match stream {
            Some(st) => stream_fields(w, st),
            None => w,
        })
        .finish()
}

/// `{"type":"auth_ok","user_id":U,"exp":N,"id":…}`: a fresh token was accepted on a live connection.
pub fn auth_ok(user_id: &str, exp: u64, id: &RequestId) -> Encoded {
    FrameWriter::new("auth_ok", 64).str("user_id", user_id).num("exp", exp).id(id.as_deref()).finish()
}

/// `{"type":"pairing_complete","device_id":D,"device_name":N,"public_key":PK|null}`: a new device
/// claimed a pairing code of this user (sent on the user channel).
pub fn pairing_complete(device_id: &str, device_name: &str, public_key: Option<&str>) -> Encoded {
    let w = FrameWriter::new("pairing_complete", 96 + device_id.len() + device_name.len())
        .str("device_id", device_id)
        .str("device_name", device_name);
    match public_key {
        Some(k) => w.str("public_key", k),
        None => w.raw("public_key", b"null"),
    }
    .finish()
}

#[cfg(test)]
mod pinned {
    //! The exact bytes of every writer for representative inputs: escapes, control characters,
    //! non-ASCII text, ids as numbers, strings or absent. The builder must reproduce them.
    use super::*;

    const NASTY: &str = "q\"b\\s/\n\r\t\u{0}\u{1}\u{1f}\u{7f} \u{e9}\u{1F600}";

    fn ids() -> [RequestId; 4] {
        [None, Some("17".into()), Some("\"r-\\\"1\"".into()), Some("-1.5e3".into())]
    }

    fn cases() -> Vec<(String, Encoded)> {
        let mut v: Vec<(String, Encoded)> = Vec::new();
        let data: &[u8] = br#"{"text":"h\u00e9","n":[1,2.5,null,true]}"#;
        v.push(("event".into(), event("room:lobby", "message:created", data, "alice", "phone-1", 1_700_000_000_000)));
        v.push(("event_nasty".into(), event(NASTY, NASTY, b"null", NASTY, NASTY, 0)));
        v.push(("event_max_ts".into(), event("c:1", "", b"\"x\"", "", "", u64::MAX)));
        v.push(("server_event".into(), server_event("room:lobby", "m", data, 5)));
        v.push(("server_event_nasty".into(), server_event(NASTY, NASTY, b"{}", 10)));
        for (i, from) in [Some(("alice", "d1")), None, Some((NASTY, NASTY))].into_iter().enumerate() {
            for (j, msg_id) in [Some("m-1"), None, Some(NASTY)].into_iter().enumerate() {
                let stamp = Stamp { seq: [0, 42, u64::MAX][j], msg_id };
                v.push((format!("durable_event_{i}_{j}"), durable_event("dm:a:b", "e", data, from, 7, stamp, None)));
            }
        }
        for (i, id) in ids().iter().enumerate() {
            v.push((format!("durable_ack_{i}_a"), durable_ack(id, "dm:a:b", 3, Some("m1"), true)));
            v.push((format!("durable_ack_{i}_b"), durable_ack(id, NASTY, u64::MAX, None, false)));
            v.push((format!("durable_ack_{i}_c"), durable_ack(id, "c", 0, Some(NASTY), false)));
            for (j, recovered) in [Some(true), Some(false), None].into_iter().enumerate() {
                let st = StreamState { seq: 9, read_seq: 4 + j as u64, recovered };
                v.push((format!("subscribed_durable_{i}_{j}"), subscribed_durable("dm:a:b", &st, id)));
            }
            v.push((
                format!("subscribed_durable_{i}_nasty"),
                subscribed_durable(NASTY, &StreamState { seq: 0, read_seq: 0, recovered: None }, id),
            ));
            v.push((format!("read_ack_{i}"), read_ack(id, "dm:a:b", 4)));
            v.push((format!("read_ack_{i}_nasty"), read_ack(id, NASTY, u64::MAX)));
            for code in [
                ErrorCode::BadRequest,
                ErrorCode::Unauthorized,
                ErrorCode::Forbidden,
                ErrorCode::RateLimited,
                ErrorCode::TooLarge,
                ErrorCode::Internal,
                ErrorCode::Unavailable,
            ] {
                v.push((format!("error_{i}_{}", code.as_str()), error(code, "no such channel", id)));
            }
            v.push((format!("error_{i}_nasty"), error(ErrorCode::BadRequest, NASTY, id)));
            v.push((format!("error_{i}_empty"), error(ErrorCode::Internal, "", id)));
            v.push((format!("channel_reply_{i}_s"), channel_reply("subscribed", "room:1", id)));
            v.push((format!("channel_reply_{i}_u"), channel_reply("unsubscribed", NASTY, id)));
            for (j, members) in
                [vec![], vec![("alice", "d1")], vec![("a", "1"), (NASTY, NASTY), ("b", "")]].into_iter().enumerate()
            {
                v.push((format!("presence_{i}_{j}"), presence("room:1", members.into_iter(), id)));
            }
            v.push((format!("presence_{i}_nasty"), presence(NASTY, std::iter::empty(), id)));
            v.push((format!("pong_{i}"), pong(1_700_000_000_000, id)));
            v.push((format!("pong_{i}_zero"), pong(0, id)));
            v.push((format!("auth_ok_{i}"), auth_ok("alice", 1_700_000_000, id)));
            v.push((format!("auth_ok_{i}_nasty"), auth_ok(NASTY, u64::MAX, id)));
        }
        v.push(("ack_num".into(), ack("5", "c:1")));
        v.push(("ack_str".into(), ack("\"x\\\"y\"", NASTY)));
        v.push(("ack_float".into(), ack("-1.5e3", "dm:a:b")));
        v.push(("membership_join".into(), membership("join", "room:1", "alice", "d1")));
        v.push(("membership_leave".into(), membership("leave", NASTY, NASTY, NASTY)));
        v.push(("typing_start".into(), typing("room:1", "alice", "d1", true)));
        v.push(("typing_stop".into(), typing(NASTY, NASTY, NASTY, false)));
        for (j, recovered) in [Some(true), Some(false), None].into_iter().enumerate() {
            let st = StreamState { seq: u64::MAX, read_seq: 12, recovered };
            v.push((format!("welcome_stream_{j}"), welcome("alice", "d1", "c-1", 30_000, 65_536, Some(&st))));
        }
        v.push(("welcome".into(), welcome("alice", "d1", "0123abcd-42", 30_000, 65_536, None)));
        v.push(("welcome_nasty".into(), welcome(NASTY, NASTY, NASTY, 0, u64::MAX, None)));
        v.push(("pairing_complete".into(), pairing_complete("d-1a2b", "Laptop", Some("AAAA"))));
        v.push(("pairing_complete_nasty".into(), pairing_complete(NASTY, NASTY, None)));
        v
    }

    #[test]
    fn json_str_escapes() {
        let mut out = Vec::new();
        json_str(&mut out, NASTY);
        json_str(&mut out, "");
        json_str(&mut out, "plain");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} \u{e9}\u{1F600}\"\"\"\"plain\""
        );
    }

    /// The bytes the hand-written writers produced before the builder (generated from them).
    #[rustfmt::skip]
    const PINS: &[(&str, &str)] = &[
        ("event", "{\"type\":\"event\",\"channel\":\"room:lobby\",\"event\":\"message:created\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"alice\",\"device_id\":\"phone-1\"},\"ts\":1700000000000}"),
        ("event_nasty", "{\"type\":\"event\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"event\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"data\":null,\"from\":{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},\"ts\":0}"),
        ("event_max_ts", "{\"type\":\"event\",\"channel\":\"c:1\",\"event\":\"\",\"data\":\"x\",\"from\":{\"user_id\":\"\",\"device_id\":\"\"},\"ts\":18446744073709551615}"),
        ("server_event", "{\"type\":\"event\",\"channel\":\"room:lobby\",\"event\":\"m\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"server\"},\"ts\":5}"),
        ("server_event_nasty", "{\"type\":\"event\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"event\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"data\":{},\"from\":{\"user_id\":\"server\"},\"ts\":10}"),
        ("durable_event_0_0", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":0,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"alice\",\"device_id\":\"d1\"},\"ts\":7,\"msg_id\":\"m-1\"}"),
        ("durable_event_0_1", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":42,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"alice\",\"device_id\":\"d1\"},\"ts\":7}"),
        ("durable_event_0_2", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":18446744073709551615,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"alice\",\"device_id\":\"d1\"},\"ts\":7,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("durable_event_1_0", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":0,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"server\"},\"ts\":7,\"msg_id\":\"m-1\"}"),
        ("durable_event_1_1", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":42,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"server\"},\"ts\":7}"),
        ("durable_event_1_2", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":18446744073709551615,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"server\"},\"ts\":7,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("durable_event_2_0", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":0,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},\"ts\":7,\"msg_id\":\"m-1\"}"),
        ("durable_event_2_1", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":42,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},\"ts\":7}"),
        ("durable_event_2_2", "{\"type\":\"event\",\"channel\":\"dm:a:b\",\"seq\":18446744073709551615,\"event\":\"e\",\"data\":{\"text\":\"h\\u00e9\",\"n\":[1,2.5,null,true]},\"from\":{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},\"ts\":7,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("durable_ack_0_a", "{\"type\":\"ack\",\"channel\":\"dm:a:b\",\"seq\":3,\"msg_id\":\"m1\",\"duplicate\":true}"),
        ("durable_ack_0_b", "{\"type\":\"ack\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":18446744073709551615}"),
        ("durable_ack_0_c", "{\"type\":\"ack\",\"channel\":\"c\",\"seq\":0,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("subscribed_durable_0_0", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":4,\"recovered\":true}"),
        ("subscribed_durable_0_1", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":5,\"recovered\":false}"),
        ("subscribed_durable_0_2", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":6}"),
        ("subscribed_durable_0_nasty", "{\"type\":\"subscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":0,\"read_seq\":0}"),
        ("read_ack_0", "{\"type\":\"ack\",\"channel\":\"dm:a:b\",\"read_seq\":4}"),
        ("read_ack_0_nasty", "{\"type\":\"ack\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"read_seq\":18446744073709551615}"),
        ("error_0_bad_request", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"no such channel\"}"),
        ("error_0_unauthorized", "{\"type\":\"error\",\"code\":\"unauthorized\",\"message\":\"no such channel\"}"),
        ("error_0_forbidden", "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"no such channel\"}"),
        ("error_0_rate_limited", "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"no such channel\"}"),
        ("error_0_too_large", "{\"type\":\"error\",\"code\":\"too_large\",\"message\":\"no such channel\"}"),
        ("error_0_internal", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"no such channel\"}"),
        ("error_0_unavailable", "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"no such channel\"}"),
        ("error_0_nasty", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("error_0_empty", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"\"}"),
        ("channel_reply_0_s", "{\"type\":\"subscribed\",\"channel\":\"room:1\"}"),
        ("channel_reply_0_u", "{\"type\":\"unsubscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("presence_0_0", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[]}"),
        ("presence_0_1", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"alice\",\"device_id\":\"d1\"}]}"),
        ("presence_0_2", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"a\",\"device_id\":\"1\"},{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},{\"user_id\":\"b\",\"device_id\":\"\"}]}"),
        ("presence_0_nasty", "{\"type\":\"presence\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"members\":[]}"),
        ("pong_0", "{\"type\":\"pong\",\"ts\":1700000000000}"),
        ("pong_0_zero", "{\"type\":\"pong\",\"ts\":0}"),
        ("auth_ok_0", "{\"type\":\"auth_ok\",\"user_id\":\"alice\",\"exp\":1700000000}"),
        ("auth_ok_0_nasty", "{\"type\":\"auth_ok\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"exp\":18446744073709551615}"),
        ("durable_ack_1_a", "{\"type\":\"ack\",\"id\":17,\"channel\":\"dm:a:b\",\"seq\":3,\"msg_id\":\"m1\",\"duplicate\":true}"),
        ("durable_ack_1_b", "{\"type\":\"ack\",\"id\":17,\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":18446744073709551615}"),
        ("durable_ack_1_c", "{\"type\":\"ack\",\"id\":17,\"channel\":\"c\",\"seq\":0,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("subscribed_durable_1_0", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":4,\"recovered\":true,\"id\":17}"),
        ("subscribed_durable_1_1", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":5,\"recovered\":false,\"id\":17}"),
        ("subscribed_durable_1_2", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":6,\"id\":17}"),
        ("subscribed_durable_1_nasty", "{\"type\":\"subscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":0,\"read_seq\":0,\"id\":17}"),
        ("read_ack_1", "{\"type\":\"ack\",\"id\":17,\"channel\":\"dm:a:b\",\"read_seq\":4}"),
        ("read_ack_1_nasty", "{\"type\":\"ack\",\"id\":17,\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"read_seq\":18446744073709551615}"),
        ("error_1_bad_request", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_unauthorized", "{\"type\":\"error\",\"code\":\"unauthorized\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_forbidden", "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_rate_limited", "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_too_large", "{\"type\":\"error\",\"code\":\"too_large\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_internal", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_unavailable", "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"no such channel\",\"id\":17}"),
        ("error_1_nasty", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"id\":17}"),
        ("error_1_empty", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"\",\"id\":17}"),
        ("channel_reply_1_s", "{\"type\":\"subscribed\",\"channel\":\"room:1\",\"id\":17}"),
        ("channel_reply_1_u", "{\"type\":\"unsubscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"id\":17}"),
        ("presence_1_0", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[],\"id\":17}"),
        ("presence_1_1", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"alice\",\"device_id\":\"d1\"}],\"id\":17}"),
        ("presence_1_2", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"a\",\"device_id\":\"1\"},{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},{\"user_id\":\"b\",\"device_id\":\"\"}],\"id\":17}"),
        ("presence_1_nasty", "{\"type\":\"presence\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"members\":[],\"id\":17}"),
        ("pong_1", "{\"type\":\"pong\",\"ts\":1700000000000,\"id\":17}"),
        ("pong_1_zero", "{\"type\":\"pong\",\"ts\":0,\"id\":17}"),
        ("auth_ok_1", "{\"type\":\"auth_ok\",\"user_id\":\"alice\",\"exp\":1700000000,\"id\":17}"),
        ("auth_ok_1_nasty", "{\"type\":\"auth_ok\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"exp\":18446744073709551615,\"id\":17}"),
        ("durable_ack_2_a", "{\"type\":\"ack\",\"id\":\"r-\\\"1\",\"channel\":\"dm:a:b\",\"seq\":3,\"msg_id\":\"m1\",\"duplicate\":true}"),
        ("durable_ack_2_b", "{\"type\":\"ack\",\"id\":\"r-\\\"1\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":18446744073709551615}"),
        ("durable_ack_2_c", "{\"type\":\"ack\",\"id\":\"r-\\\"1\",\"channel\":\"c\",\"seq\":0,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("subscribed_durable_2_0", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":4,\"recovered\":true,\"id\":\"r-\\\"1\"}"),
        ("subscribed_durable_2_1", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":5,\"recovered\":false,\"id\":\"r-\\\"1\"}"),
        ("subscribed_durable_2_2", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":6,\"id\":\"r-\\\"1\"}"),
        ("subscribed_durable_2_nasty", "{\"type\":\"subscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":0,\"read_seq\":0,\"id\":\"r-\\\"1\"}"),
        ("read_ack_2", "{\"type\":\"ack\",\"id\":\"r-\\\"1\",\"channel\":\"dm:a:b\",\"read_seq\":4}"),
        ("read_ack_2_nasty", "{\"type\":\"ack\",\"id\":\"r-\\\"1\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"read_seq\":18446744073709551615}"),
        ("error_2_bad_request", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_unauthorized", "{\"type\":\"error\",\"code\":\"unauthorized\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_forbidden", "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_rate_limited", "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_too_large", "{\"type\":\"error\",\"code\":\"too_large\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_internal", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_unavailable", "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"no such channel\",\"id\":\"r-\\\"1\"}"),
        ("error_2_nasty", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"id\":\"r-\\\"1\"}"),
        ("error_2_empty", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"\",\"id\":\"r-\\\"1\"}"),
        ("channel_reply_2_s", "{\"type\":\"subscribed\",\"channel\":\"room:1\",\"id\":\"r-\\\"1\"}"),
        ("channel_reply_2_u", "{\"type\":\"unsubscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"id\":\"r-\\\"1\"}"),
        ("presence_2_0", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[],\"id\":\"r-\\\"1\"}"),
        ("presence_2_1", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"alice\",\"device_id\":\"d1\"}],\"id\":\"r-\\\"1\"}"),
        ("presence_2_2", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"a\",\"device_id\":\"1\"},{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},{\"user_id\":\"b\",\"device_id\":\"\"}],\"id\":\"r-\\\"1\"}"),
        ("presence_2_nasty", "{\"type\":\"presence\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"members\":[],\"id\":\"r-\\\"1\"}"),
        ("pong_2", "{\"type\":\"pong\",\"ts\":1700000000000,\"id\":\"r-\\\"1\"}"),
        ("pong_2_zero", "{\"type\":\"pong\",\"ts\":0,\"id\":\"r-\\\"1\"}"),
        ("auth_ok_2", "{\"type\":\"auth_ok\",\"user_id\":\"alice\",\"exp\":1700000000,\"id\":\"r-\\\"1\"}"),
        ("auth_ok_2_nasty", "{\"type\":\"auth_ok\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"exp\":18446744073709551615,\"id\":\"r-\\\"1\"}"),
        ("durable_ack_3_a", "{\"type\":\"ack\",\"id\":-1.5e3,\"channel\":\"dm:a:b\",\"seq\":3,\"msg_id\":\"m1\",\"duplicate\":true}"),
        ("durable_ack_3_b", "{\"type\":\"ack\",\"id\":-1.5e3,\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":18446744073709551615}"),
        ("durable_ack_3_c", "{\"type\":\"ack\",\"id\":-1.5e3,\"channel\":\"c\",\"seq\":0,\"msg_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("subscribed_durable_3_0", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":4,\"recovered\":true,\"id\":-1.5e3}"),
        ("subscribed_durable_3_1", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":5,\"recovered\":false,\"id\":-1.5e3}"),
        ("subscribed_durable_3_2", "{\"type\":\"subscribed\",\"channel\":\"dm:a:b\",\"seq\":9,\"read_seq\":6,\"id\":-1.5e3}"),
        ("subscribed_durable_3_nasty", "{\"type\":\"subscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"seq\":0,\"read_seq\":0,\"id\":-1.5e3}"),
        ("read_ack_3", "{\"type\":\"ack\",\"id\":-1.5e3,\"channel\":\"dm:a:b\",\"read_seq\":4}"),
        ("read_ack_3_nasty", "{\"type\":\"ack\",\"id\":-1.5e3,\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"read_seq\":18446744073709551615}"),
        ("error_3_bad_request", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_unauthorized", "{\"type\":\"error\",\"code\":\"unauthorized\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_forbidden", "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_rate_limited", "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_too_large", "{\"type\":\"error\",\"code\":\"too_large\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_internal", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_unavailable", "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"no such channel\",\"id\":-1.5e3}"),
        ("error_3_nasty", "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"id\":-1.5e3}"),
        ("error_3_empty", "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"\",\"id\":-1.5e3}"),
        ("channel_reply_3_s", "{\"type\":\"subscribed\",\"channel\":\"room:1\",\"id\":-1.5e3}"),
        ("channel_reply_3_u", "{\"type\":\"unsubscribed\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"id\":-1.5e3}"),
        ("presence_3_0", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[],\"id\":-1.5e3}"),
        ("presence_3_1", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"alice\",\"device_id\":\"d1\"}],\"id\":-1.5e3}"),
        ("presence_3_2", "{\"type\":\"presence\",\"channel\":\"room:1\",\"members\":[{\"user_id\":\"a\",\"device_id\":\"1\"},{\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"},{\"user_id\":\"b\",\"device_id\":\"\"}],\"id\":-1.5e3}"),
        ("presence_3_nasty", "{\"type\":\"presence\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"members\":[],\"id\":-1.5e3}"),
        ("pong_3", "{\"type\":\"pong\",\"ts\":1700000000000,\"id\":-1.5e3}"),
        ("pong_3_zero", "{\"type\":\"pong\",\"ts\":0,\"id\":-1.5e3}"),
        ("auth_ok_3", "{\"type\":\"auth_ok\",\"user_id\":\"alice\",\"exp\":1700000000,\"id\":-1.5e3}"),
        ("auth_ok_3_nasty", "{\"type\":\"auth_ok\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"exp\":18446744073709551615,\"id\":-1.5e3}"),
        ("ack_num", "{\"type\":\"ack\",\"id\":5,\"channel\":\"c:1\"}"),
        ("ack_str", "{\"type\":\"ack\",\"id\":\"x\\\"y\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("ack_float", "{\"type\":\"ack\",\"id\":-1.5e3,\"channel\":\"dm:a:b\"}"),
        ("membership_join", "{\"type\":\"join\",\"channel\":\"room:1\",\"user_id\":\"alice\",\"device_id\":\"d1\"}"),
        ("membership_leave", "{\"type\":\"leave\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\"}"),
        ("typing_start", "{\"type\":\"typing\",\"channel\":\"room:1\",\"user_id\":\"alice\",\"device_id\":\"d1\",\"state\":\"start\"}"),
        ("typing_stop", "{\"type\":\"typing\",\"channel\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"state\":\"stop\"}"),
        ("welcome_stream_0", "{\"type\":\"welcome\",\"user_id\":\"alice\",\"device_id\":\"d1\",\"conn_id\":\"c-1\",\"heartbeat_ms\":30000,\"max_message_bytes\":65536,\"seq\":18446744073709551615,\"read_seq\":12,\"recovered\":true}"),
        ("welcome_stream_1", "{\"type\":\"welcome\",\"user_id\":\"alice\",\"device_id\":\"d1\",\"conn_id\":\"c-1\",\"heartbeat_ms\":30000,\"max_message_bytes\":65536,\"seq\":18446744073709551615,\"read_seq\":12,\"recovered\":false}"),
        ("welcome_stream_2", "{\"type\":\"welcome\",\"user_id\":\"alice\",\"device_id\":\"d1\",\"conn_id\":\"c-1\",\"heartbeat_ms\":30000,\"max_message_bytes\":65536,\"seq\":18446744073709551615,\"read_seq\":12}"),
        ("welcome", "{\"type\":\"welcome\",\"user_id\":\"alice\",\"device_id\":\"d1\",\"conn_id\":\"0123abcd-42\",\"heartbeat_ms\":30000,\"max_message_bytes\":65536}"),
        ("welcome_nasty", "{\"type\":\"welcome\",\"user_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"conn_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"heartbeat_ms\":0,\"max_message_bytes\":18446744073709551615}"),
        ("pairing_complete", "{\"type\":\"pairing_complete\",\"device_id\":\"d-1a2b\",\"device_name\":\"Laptop\",\"public_key\":\"AAAA\"}"),
        ("pairing_complete_nasty", "{\"type\":\"pairing_complete\",\"device_id\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"device_name\":\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\u0001\\u001f\u{7f} é😀\",\"public_key\":null}"),
    ];

    /// Every case, byte for byte, as pinned.
    #[test]
    fn every_writer_matches_its_pin() {
        let got = cases();
        assert_eq!(got.len(), PINS.len());
        for ((name, got), (pin_name, want)) in got.iter().zip(PINS) {
            assert_eq!(name, pin_name);
            assert_eq!(got.as_str(), *want, "{name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &Encoded) -> serde_json::Value {
        serde_json::from_str(e.as_str()).unwrap()
    }

    #[test]
    fn frames_are_valid_json() {
        let e = event("room:1", "a\"b\n\u{1}", b"{\"k\":[1,2]}", "alice", "d1", 42);
        assert_eq!(
            parse(&e),
            serde_json::json!({"type":"event","channel":"room:1","event":"a\"b\n\u{1}","data":{"k":[1,2]},
                "from":{"user_id":"alice","device_id":"d1"},"ts":42})
        );
        let id: RequestId = Some("\"x\"".into());
        assert_eq!(parse(&error(ErrorCode::Forbidden, "no", &id))["id"], "x");
        assert_eq!(parse(&pong(0, &None)), serde_json::json!({"type":"pong","ts":0}));
        let p = presence("c:1", [("a", "1"), ("b", "2")].into_iter(), &Some("3".into()));
        assert_eq!(parse(&p)["members"][1]["device_id"], "2");
        assert_eq!(parse(&p)["id"], 3);
        assert_eq!(parse(&typing("c:1", "u", "d", false))["state"], "stop");
        assert_eq!(parse(&welcome("u", "d", "c", 1, 2, None))["max_message_bytes"], 2);
        assert_eq!(parse(&ack("5", "c:1"))["id"], 5);
        assert_eq!(parse(&membership("leave", "c:1", "u", "d"))["type"], "leave");
        assert_eq!(parse(&auth_ok("u", 9, &None))["exp"], 9);
        assert_eq!(parse(&channel_reply("subscribed", "c:1", &None))["channel"], "c:1");
    }

    #[test]
    fn signed_frames_carry_the_signature_and_key() {
        let sig = Signature {
            nonce: "n0nce-0123456789ab".into(),
            sig_ts: 1_700_000_000_000,
            sig: "c2ln".into(),
            public_key: "a2V5".into(),
        };
        let e = signed_event("user:a", "m", b" {\"k\" : 1} ", "a", "d", 5, &sig);
        assert_eq!(
            e.as_str(),
            r#"{"type":"event","channel":"user:a","event":"m","data": {"k" : 1} ,"from":{"user_id":"a","device_id":"d","public_key":"a2V5"},"ts":5,"nonce":"n0nce-0123456789ab","sig_ts":1700000000000,"sig":"c2ln"}"#
        );
        let d =
            durable_event("dm:a:b", "m", b"[1]", Some(("a", "d")), 5, Stamp { seq: 3, msg_id: Some("m1") }, Some(&sig));
        assert_eq!(
            d.as_str(),
            r#"{"type":"event","channel":"dm:a:b","seq":3,"event":"m","data":[1],"from":{"user_id":"a","device_id":"d","public_key":"a2V5"},"ts":5,"msg_id":"m1","nonce":"n0nce-0123456789ab","sig_ts":1700000000000,"sig":"c2ln"}"#
        );
        assert_eq!(event_seq(d.as_bytes()), Some((&b"dm:a:b"[..], 3)));
    }

    #[test]
    fn durable_frames() {
        let e = durable_event("dm:a:b", "m", b"1", Some(("a", "d")), 5, Stamp { seq: 42, msg_id: Some("x\"y") }, None);
        let v = parse(&e);
        assert_eq!(v["seq"], 42);
        assert_eq!(v["msg_id"], "x\"y");
        assert_eq!(event_seq(e.as_bytes()), Some((&b"dm:a:b"[..], 42)));
        assert_eq!(event_seq(event("c:1", "m", b"1", "a", "d", 5).as_bytes()), None);
        assert_eq!(event_seq(b"{\"type\":\"event\",\"channel\":\"c\",\"seq\":"), None);
        let a = durable_ack(&Some("7".into()), "dm:a:b", 3, Some("m1"), true);
        assert_eq!(
            parse(&a),
            serde_json::json!({"type":"ack","id":7,"channel":"dm:a:b","seq":3,"msg_id":"m1","duplicate":true})
        );
        let st = StreamState { seq: 9, read_seq: 4, recovered: Some(false) };
        let v = parse(&subscribed_durable("dm:a:b", &st, &None));
        assert_eq!(
            v,
            serde_json::json!({"type":"subscribed","channel":"dm:a:b","seq":9,"read_seq":4,"recovered":false})
        );
        assert_eq!(parse(&welcome("u", "d", "c", 1, 2, Some(&st)))["read_seq"], 4);
        assert_eq!(parse(&read_ack(&None, "dm:a:b", 4))["read_seq"], 4);
    }

    #[test]
    fn headers_follow_rfc_6455_length_encoding() {
        let mut h = [0u8; 10];
        let mut head = |len| {
            let n = text_frame_header(len, &mut h);
            h[..n].to_vec()
        };
        assert_eq!(head(0), [0x81, 0]);
        assert_eq!(head(125), [0x81, 125]);
        assert_eq!(head(126), [0x81, 126, 0, 126]);
        assert_eq!(head(65535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(head(65536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        // The same bytes tungstenite writes for an unmasked server text frame.
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            use tokio_tungstenite::tungstenite::protocol::frame::{coding::Data, coding::OpCode, Frame};
            let frame = Frame::message(vec![b'a'; len], OpCode::Data(Data::Text), true);
            let mut theirs = Vec::new();
            frame.format(&mut theirs).unwrap();
            let n = text_frame_header(len, &mut h);
            assert_eq!(&theirs[..n], &h[..n], "len {len}");
            assert_eq!(theirs.len(), n + len);
        }
    }
}
