//! Outbound frames, written straight into one buffer and frozen into `Bytes` (UTF-8 by
//! construction) so that fan-out hands out clones, never copies.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{ErrorCode, RequestId};

/// An encoded text frame: cloning it is a reference-count increment.
pub type Encoded = Utf8Bytes;

/// Appends `s` as a JSON string literal.
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

fn finish(out: Vec<u8>) -> Encoded {
    // Every writer below emits valid UTF-8 (ASCII punctuation plus escaped Rust strings and
    // already-valid JSON), so this conversion only fails on a bug.
    Utf8Bytes::try_from(Bytes::from(out))
        .unwrap_or_else(|_| Utf8Bytes::from_static("{\"type\":\"error\",\"code\":\"internal\"}"))
}

fn push_id(out: &mut Vec<u8>, id: &RequestId) {
    push_id_str(out, id.as_deref());
}

fn push_id_str(out: &mut Vec<u8>, id: Option<&str>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.as_bytes());
    }
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

/// A durable channel's position of an event: its `seq` and the client's `msg_id`.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub seq: u64,
    pub msg_id: Option<&'a str>,
}

const EVENT_PREFIX: &[u8] = b"{\"type\":\"event\",\"channel\":\"";

/// The shared shape of `event` frames; `from` is `None` for the server. Durable events carry
/// `"seq"` right after the channel (so [`event_seq`] finds it without parsing) and `msg_id`.
fn event_frame(
    channel: &str,
    event: &str,
    data: &[u8],
    from: Option<(&str, &str)>,
    ts: u64,
    stamp: Option<Stamp<'_>>,
) -> Encoded {
    let from_len = from.map(|(u, d)| u.len() + d.len()).unwrap_or(0);
    let stamp_len = stamp.map(|s| 40 + s.msg_id.map_or(0, str::len)).unwrap_or(0);
    let mut out = Vec::with_capacity(96 + channel.len() + event.len() + data.len() + from_len + stamp_len);
    out.extend_from_slice(b"{\"type\":\"event\",\"channel\":");
    json_str(&mut out, channel);
    if let Some(st) = stamp {
        out.extend_from_slice(b",\"seq\":");
        push_u64(&mut out, st.seq);
    }
    out.extend_from_slice(b",\"event\":");
    json_str(&mut out, event);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    match from {
        Some((user_id, device_id)) => {
            out.extend_from_slice(b",\"from\":{\"user_id\":");
            json_str(&mut out, user_id);
            out.extend_from_slice(b",\"device_id\":");
            json_str(&mut out, device_id);
            out.extend_from_slice(b"},\"ts\":");
        }
        None => out.extend_from_slice(b",\"from\":{\"user_id\":\"server\"},\"ts\":"),
    }
    push_u64(&mut out, ts);
    if let Some(Stamp { msg_id: Some(m), .. }) = stamp {
        out.extend_from_slice(b",\"msg_id\":");
        json_str(&mut out, m);
    }
    out.push(b'}');
    finish(out)
}

/// `{"type":"event","channel":C,"event":E,"data":D,"from":{"user_id":U,"device_id":D},"ts":MS}`.
/// `data` must already be JSON text.
pub fn event(channel: &str, event: &str, data: &[u8], user_id: &str, device_id: &str, ts: u64) -> Encoded {
    event_frame(channel, event, data, Some((user_id, device_id)), ts, None)
}

/// An `event` published by the server (HTTP API, external Redis publisher):
/// `"from":{"user_id":"server"}`.
pub fn server_event(channel: &str, event: &str, data: &[u8], ts: u64) -> Encoded {
    event_frame(channel, event, data, None, ts, None)
}

/// A durable channel's event: `{"type":"event","channel":C,"seq":N,…,"msg_id":M}`. `from` is
/// `None` for the server ("from":{"user_id":"server"}).
pub fn durable_event(
    channel: &str,
    event: &str,
    data: &[u8],
    from: Option<(&str, &str)>,
    ts: u64,
    stamp: Stamp<'_>,
) -> Encoded {
    event_frame(channel, event, data, from, ts, Some(stamp))
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

/// `{"type":"ack","id":…,"channel":C` — the start of both durable acks.
fn ack_head(out: &mut Vec<u8>, id: Option<&str>, channel: &str) {
    out.extend_from_slice(b"{\"type\":\"ack\"");
    push_id_str(out, id);
    out.extend_from_slice(b",\"channel\":");
    json_str(out, channel);
}

/// The reply to a durable publish, after the event is committed:
/// `{"type":"ack","id":…,"channel":C,"seq":N,"msg_id":M,"duplicate":true}` (`duplicate` only for
/// a repeated `msg_id`, which gets its original `seq`).
pub fn durable_ack(id: &RequestId, channel: &str, seq: u64, msg_id: Option<&str>, duplicate: bool) -> Encoded {
    let mut out = Vec::with_capacity(64 + channel.len() + msg_id.map_or(0, str::len));
    ack_head(&mut out, id.as_deref(), channel);
    out.extend_from_slice(b",\"seq\":");
    push_u64(&mut out, seq);
    if let Some(m) = msg_id {
        out.extend_from_slice(b",\"msg_id\":");
        json_str(&mut out, m);
    }
    if duplicate {
        out.extend_from_slice(b",\"duplicate\":true");
    }
    out.push(b'}');
    finish(out)
}

/// A durable channel's state for `subscribed` / `welcome`: the latest `seq`, this device's read
/// position, and — after a replay request — whether every missed event was replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub seq: u64,
    pub read_seq: u64,
    pub recovered: Option<bool>,
}

fn push_stream(out: &mut Vec<u8>, st: &StreamState) {
    out.extend_from_slice(b",\"seq\":");
    push_u64(out, st.seq);
    out.extend_from_slice(b",\"read_seq\":");
    push_u64(out, st.read_seq);
    match st.recovered {
        Some(true) => out.extend_from_slice(b",\"recovered\":true"),
        Some(false) => out.extend_from_slice(b",\"recovered\":false"),
        None => {}
    }
}

/// `{"type":"subscribed","channel":C,"seq":N,"read_seq":R,"recovered":B,"id":…}` for a durable
/// channel.
pub fn subscribed_durable(channel: &str, st: &StreamState, id: &RequestId) -> Encoded {
    let mut out = Vec::with_capacity(96 + channel.len());
    out.extend_from_slice(b"{\"type\":\"subscribed\",\"channel\":");
    json_str(&mut out, channel);
    push_stream(&mut out, st);
    push_id(&mut out, id);
    out.push(b'}');
    finish(out)
}

/// The reply to a client's read-position `ack` that carried an `id`:
/// `{"type":"ack","id":…,"channel":C,"read_seq":N}`.
pub fn read_ack(id: &RequestId, channel: &str, read_seq: u64) -> Encoded {
    let mut out = Vec::with_capacity(64 + channel.len());
    ack_head(&mut out, id.as_deref(), channel);
    out.extend_from_slice(b",\"read_seq\":");
    push_u64(&mut out, read_seq);
    out.push(b'}');
    finish(out)
}

/// `{"type":"error","code":K,"message":M,"id":…}`.
pub fn error(code: ErrorCode, message: &str, id: &RequestId) -> Encoded {
    let mut out = Vec::with_capacity(64 + message.len());
    out.extend_from_slice(b"{\"type\":\"error\",\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    json_str(&mut out, message);
    push_id(&mut out, id);
    out.push(b'}');
    finish(out)
}

/// A reply about one channel: `{"type":T,"channel":C,"id":…}` (subscribed, unsubscribed).
pub fn channel_reply(kind: &str, channel: &str, id: &RequestId) -> Encoded {
    let mut out = Vec::with_capacity(48 + channel.len());
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"channel\":");
    json_str(&mut out, channel);
    push_id(&mut out, id);
    out.push(b'}');
    finish(out)
}

/// `{"type":"ack","id":…,"channel":C}`.
pub fn ack(id: &str, channel: &str) -> Encoded {
    let mut out = Vec::with_capacity(40 + id.len() + channel.len());
    ack_head(&mut out, Some(id), channel);
    out.push(b'}');
    finish(out)
}

/// `{"type":"join"|"leave","channel":C,"user_id":U,"device_id":D}`.
pub fn membership(kind: &str, channel: &str, user_id: &str, device_id: &str) -> Encoded {
    let mut out = Vec::with_capacity(64 + channel.len() + user_id.len() + device_id.len());
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"channel\":");
    json_str(&mut out, channel);
    out.extend_from_slice(b",\"user_id\":");
    json_str(&mut out, user_id);
    out.extend_from_slice(b",\"device_id\":");
    json_str(&mut out, device_id);
    out.push(b'}');
    finish(out)
}

/// `{"type":"typing","channel":C,"user_id":U,"device_id":D,"state":"start"|"stop"}`.
pub fn typing(channel: &str, user_id: &str, device_id: &str, typing: bool) -> Encoded {
    let mut out = Vec::with_capacity(80 + channel.len() + user_id.len() + device_id.len());
    out.extend_from_slice(b"{\"type\":\"typing\",\"channel\":");
    json_str(&mut out, channel);
    out.extend_from_slice(b",\"user_id\":");
    json_str(&mut out, user_id);
    out.extend_from_slice(b",\"device_id\":");
    json_str(&mut out, device_id);
    out.extend_from_slice(if typing { b",\"state\":\"start\"}" } else { b",\"state\":\"stop\"}" });
    finish(out)
}

/// `{"type":"presence","channel":C,"members":[{"user_id":U,"device_id":D},…],"id":…}`.
pub fn presence<'a>(channel: &str, members: impl Iterator<Item = (&'a str, &'a str)>, id: &RequestId) -> Encoded {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"type\":\"presence\",\"channel\":");
    json_str(&mut out, channel);
    out.extend_from_slice(b",\"members\":[");
    for (i, (u, d)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"user_id\":");
        json_str(&mut out, u);
        out.extend_from_slice(b",\"device_id\":");
        json_str(&mut out, d);
        out.push(b'}');
    }
    out.push(b']');
    push_id(&mut out, id);
    out.push(b'}');
    finish(out)
}

/// `{"type":"pong","ts":MS,"id":…}`.
pub fn pong(ts: u64, id: &RequestId) -> Encoded {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(b"{\"type\":\"pong\",\"ts\":");
    push_u64(&mut out, ts);
    push_id(&mut out, id);
    out.push(b'}');
    finish(out)
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
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"type\":\"welcome\",\"user_id\":");
    json_str(&mut out, user_id);
    out.extend_from_slice(b",\"device_id\":");
    json_str(&mut out, device_id);
    out.extend_from_slice(b",\"conn_id\":");
    json_str(&mut out, conn_id);
    out.extend_from_slice(b",\"heartbeat_ms\":");
    push_u64(&mut out, heartbeat_ms);
    out.extend_from_slice(b",\"max_message_bytes\":");
    push_u64(&mut out, max_message_bytes);
    if let Some(st) = stream {
        push_stream(&mut out, st);
    }
    out.push(b'}');
    finish(out)
}

/// `{"type":"auth_ok","user_id":U,"exp":N,"id":…}`: a fresh token was accepted on a live connection.
pub fn auth_ok(user_id: &str, exp: u64, id: &RequestId) -> Encoded {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"type\":\"auth_ok\",\"user_id\":");
    json_str(&mut out, user_id);
    out.extend_from_slice(b",\"exp\":");
    push_u64(&mut out, exp);
    push_id(&mut out, id);
    out.push(b'}');
    finish(out)
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
    fn durable_frames() {
        let e = durable_event("dm:a:b", "m", b"1", Some(("a", "d")), 5, Stamp { seq: 42, msg_id: Some("x\"y") });
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
}
