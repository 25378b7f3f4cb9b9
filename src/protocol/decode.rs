//! Inbound text frames → [`Frame`]. Every malformed input becomes a [`DecodeError`] that names the
//! problem; nothing here panics on client bytes.

use std::cell::Cell;

use simd_json::prelude::*;
use simd_json::tape::{Node, Tape, Value as TapeValue};

use super::{ErrorCode, Frame, Request, RequestId, SigFields};

/// Longest accepted event name, in bytes.
pub const MAX_EVENT_LEN: usize = 256;
/// Longest accepted request id (JSON text), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted `msg_id`, in bytes.
pub const MAX_MSG_ID_LEN: usize = 128;

/// A frame that could not be understood; `id` is echoed when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    pub id: RequestId,
}

fn bad(message: impl Into<String>, id: &RequestId) -> DecodeError {
    DecodeError { code: ErrorCode::BadRequest, message: message.into(), id: id.clone() }
}

/// An optional non-negative integer field (`since`, `seq`).
fn seq_field(obj: &TapeValue<'_, '_>, key: &str, id: &RequestId) -> Result<Option<u64>, DecodeError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| bad(format!("field `{key}` must be a non-negative integer"), id)),
    }
}

fn str_field<'v>(obj: &'v TapeValue<'v, 'v>, key: &str, id: &RequestId) -> Result<&'v str, DecodeError> {
    // One scan of the top level in the common case; the second only to name the error.
    match obj.get_str(key) {
        Some(v) => Ok(v),
        None if obj.get(key).is_none() => Err(bad(format!("missing field `{key}`"), id)),
        None => Err(bad(format!("field `{key}` must be a string"), id)),
    }
}

/// The request id of a frame too deep to parse: the raw value of the top-level `"id"` key when
/// it is a string or a number and comes before the first nested value. An iterative scan over
/// the top level only; never recurses.
fn shallow_id(text: &[u8]) -> RequestId {
    fn ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }
    /// End (exclusive) of the string starting at `b[i] == '"'`.
    fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }
    let b = text;
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = &b[i..key_end];
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let start = i;
        let end = match b.get(i)? {
            b'"' => string_end(b, i)?,
            b'-' | b'0'..=b'9' => {
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                i
            }
            b't' | b'f' | b'n' => {
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                i
            }
            // A nested value: the id (if any) is not read past it.
            _ => return None,
        };
        if key == b"\"id\"" {
            crate::util::json::check_frame(&b[start..end], 1).ok()?;
            let mut raw = b[start..end].to_vec();
            let v = simd_json::to_borrowed_value(&mut raw).ok()?;
            if !(v.is_str() || v.is_i64() || v.is_u64() || v.is_f64()) {
                return None;
            }
            let text = v.encode();
            return (text.len() <= MAX_ID_LEN).then(|| text.into_boxed_str());
        }
        i = ws(b, end);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// simd-json's working memory (its stage buffers and the tape), kept per thread so a decode
/// allocates neither. Per worker thread, not per connection: idle connections hold none of it.
type Scratch = (simd_json::Buffers, Tape<'static>);

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

/// After a frame this long, or a tape this big (bytes), the thread's scratch is dropped instead
/// of kept, so one huge frame does not pin its buffers (about twice the frame, plus the
/// structural index and the tape) in every worker thread for good.
const SCRATCH_KEEP_MAX: usize = 64 * 1024;

/// Decodes one text frame. `buf` is scratch space that simd-json parses in place (reused by the
/// caller across frames, so decoding does not allocate a buffer per frame); simd-json's own
/// buffers and tape are reused per thread. Nesting deeper than `max_depth`, and what simd-json
/// would misread instead of refusing, are refused by an iterative pre-scan
/// ([`crate::util::json::check_frame`]) before simd-json sees the frame.
pub fn decode(text: &[u8], buf: &mut Vec<u8>, max_depth: usize) -> Result<Frame, DecodeError> {
    if let Err(e) = crate::util::json::check_frame(text, max_depth) {
        return Err(bad(e.to_string(), &shallow_id(text)));
    }
    buf.clear();
    buf.extend_from_slice(text);
    // Taken out of the thread-local for the duration (decode never re-enters itself); a panic
    // in between merely loses it.
    let (mut buffers, tape) =
        SCRATCH.with(Cell::take).unwrap_or_else(|| (simd_json::Buffers::default(), Tape(Vec::new())));
    // `reset` empties the tape and ties it to this frame's bytes, then back to `'static`.
    let mut tape: Tape<'_> = tape.reset();
    // The tape, not a `Value` tree: no map is built, so an object of many identical keys costs
    // linear time (simd-json's maps are quadratic in duplicate keys), and fields are found by a
    // scan of the top level (the first of duplicate keys wins); `data` is written from the tape.
    let frame = match simd_json::fill_tape(buf.as_mut_slice(), &mut buffers, &mut tape) {
        Ok(()) => frame(text, &tape.as_value()),
        Err(_) => Err(bad("malformed JSON", &None)),
    };
    let tape: Tape<'static> = tape.reset();
    if text.len() <= SCRATCH_KEEP_MAX && tape.0.capacity() * std::mem::size_of::<Node<'_>>() <= SCRATCH_KEEP_MAX {
        SCRATCH.with(|s| s.set(Some((buffers, tape))));
    }
    frame
}

/// The frame of a parsed top-level value (`text` is the frame's raw JSON).
fn frame(text: &[u8], value: &TapeValue<'_, '_>) -> Result<Frame, DecodeError> {
    let none: RequestId = None;
    if value.as_object().is_none() {
        return Err(bad("a frame must be a JSON object", &none));
    }
    let id = request_id(value)?;
    let kind = str_field(value, "type", &id)?;
    let channel = || str_field(value, "channel", &id).map(str::to_string);
    let request = match kind {
        "auth" => Request::Auth { token: str_field(value, "token", &id)?.to_string() },
        "subscribe" => Request::Subscribe { channel: channel()?, since: seq_field(value, "since", &id)? },
        "ack" => Request::Ack {
            channel: channel()?,
            seq: seq_field(value, "seq", &id)?.ok_or_else(|| bad("missing field `seq`", &id))?,
        },
        "unsubscribe" => Request::Unsubscribe { channel: channel()? },
        "publish" => publish(text, value, channel()?, &id)?,
        "typing" => {
            let channel = channel()?;
            let typing = match str_field(value, "state", &id)? {
                "start" => true,
                "stop" => false,
                _ => return Err(bad("`state` must be \"start\" or \"stop\"", &id)),
            };
            Request::Typing { channel, typing }
        }
        "presence" => Request::Presence { channel: channel()? },
        "ping" => Request::Ping,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!("unknown type {shown:?}"), &id));
        }
    };
    Ok(Frame { id, request })
}

/// The frame's `"id"`: a string or a number, kept as its JSON text (at most [`MAX_ID_LEN`]).
fn request_id(value: &TapeValue<'_, '_>) -> Result<RequestId, DecodeError> {
    let none: RequestId = None;
    match value.get("id") {
        None => Ok(None),
        Some(v) if v.is_str() || v.is_i64() || v.is_u64() || v.is_f64() => {
            let text = v.encode();
            if text.len() > MAX_ID_LEN {
                return Err(bad(format!("`id` is longer than {MAX_ID_LEN} bytes"), &none));
            }
            Ok(Some(text.into_boxed_str()))
        }
        Some(_) => Err(bad("field `id` must be a string or a number", &none)),
    }
}

/// A `publish` (its `channel` already read): the event name, `data` as the exact text the
/// client sent (`null` when absent), the optional `msg_id` and the signature fields.
fn publish<'v>(
    text: &[u8],
    value: &'v TapeValue<'v, 'v>,
    channel: String,
    id: &RequestId,
) -> Result<Request, DecodeError> {
    let event = str_field(value, "event", id)?;
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(bad(format!("`event` must be 1-{MAX_EVENT_LEN} bytes"), id));
    }
    if event.chars().any(char::is_control) {
        return Err(bad("`event` must not contain control characters", id));
    }
    let data = match value.get("data") {
        Some(_) => match data_span(text) {
            Ok(Some((start, end))) => text[start..end].to_vec(),
            Ok(None) => return Err(bad("malformed JSON", id)),
            Err(why) => return Err(bad(why, id)),
        },
        None => b"null".to_vec(),
    };
    let msg_id = msg_id_field(value, id)?;
    let signed = sig_fields(value);
    Ok(Request::Publish { channel, event: event.to_string(), data, msg_id, signed })
}

/// The signature fields of a publish (`None` when it has none of them). Their content is judged
/// where the channel is known to be signed, not here.
fn sig_fields(value: &TapeValue<'_, '_>) -> Option<Box<SigFields>> {
    let (nonce, sig_ts, sig) = (value.get("nonce"), value.get("sig_ts"), value.get("sig"));
    if nonce.is_none() && sig_ts.is_none() && sig.is_none() {
        return None;
    }
    let mut f = SigFields::default();
    let text = |v: Option<TapeValue<'_, '_>>, name: &'static str, wrong: &mut Option<&'static str>| match v {
        None => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.into()),
            None => {
                wrong.get_or_insert(name);
                None
            }
        },
    };
    f.nonce = text(nonce, "nonce", &mut f.wrong);
    f.sig = text(sig, "sig", &mut f.wrong);
    f.sig_ts = match sig_ts {
        None => None,
        Some(v) => match (v.as_u64(), v.as_str()) {
            (Some(n), _) => Some(n),
            (None, Some(s)) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        },
    };
    if sig_ts.is_some() && f.sig_ts.is_none() {
        f.wrong.get_or_insert("sig_ts");
    }
    Some(Box::new(f))
}

/// The byte span of the value of the first top-level `"data"` key (the one the tape reads:
/// keys compare unescaped). An iterative scan of a frame that already passed
/// [`crate::util::json::check_frame`] and simd-json; never recurses. Refuses a raw control
/// character inside a string of `data` (no JSON text has one; recipients' parsers would refuse it).
fn data_span(b: &[u8]) -> Result<Option<(usize, usize)>, &'static str> {
    fn ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }
    /// End (exclusive) of the string starting at `b[i] == '"'`; whether it holds a raw control
    /// character.
    fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
        let mut control = false;
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some((i + 1, control)),
                c => {
                    control |= c < 0x20;
                    i += 1;
                }
            }
        }
        None
    }
    /// End (exclusive) of the value starting at `b[i]`: nested values are skipped by counting
    /// brackets outside strings.
    fn value_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
        let mut depth = 0usize;
        let mut control = false;
        loop {
            match *b.get(i)? {
                b'"' => {
                    let (end, c) = string_end(b, i)?;
                    control |= c;
                    i = end;
                }
                b'[' | b'{' => {
                    depth += 1;
                    i += 1;
                }
                b']' | b'}' => {
                    depth = depth.checked_sub(1)?;
                    i += 1;
                }
                _ if depth == 0 => {
                    // A scalar: up to the next delimiter.
                    while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        i += 1;
                    }
                    return Some((i, control));
                }
                _ => i += 1,
            }
            if depth == 0 {
                return Some((i, control));
            }
        }
    }
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Ok(None);
    }
    i += 1;
    loop {
        i = ws(b, i);
        if b.get(i) != Some(&b'"') {
            return Ok(None);
        }
        let Some((key_end, _)) = string_end(b, i) else { return Ok(None) };
        let key = &b[i..key_end];
        let is_data = match key.contains(&b'\\') {
            false => key == b"\"data\"",
            true => serde_json::from_slice::<String>(key).is_ok_and(|k| k == "data"),
        };
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Ok(None);
        }
        i = ws(b, i + 1);
        let start = i;
        let Some((end, control)) = value_end(b, i) else { return Ok(None) };
        if is_data {
            if control {
                return Err("`data` holds a raw control character in a string");
            }
            return Ok(Some((start, end)));
        }
        i = ws(b, end);
        if b.get(i) != Some(&b',') {
            return Ok(None);
        }
        i += 1;
    }
}

/// The optional `msg_id` of a publish: a string or an integer (kept as text), 1-[`MAX_MSG_ID_LEN`]
/// bytes without control characters; `null` counts as absent.
fn msg_id_field(value: &TapeValue<'_, '_>, id: &RequestId) -> Result<Option<Box<str>>, DecodeError> {
    let v = match value.get("msg_id") {
        None => return Ok(None),
        Some(v) if v.is_null() => return Ok(None),
        Some(v) => v,
    };
    let text = match v.as_str() {
        Some(s) => s.to_string(),
        None if v.is_u64() || v.is_i64() => v.encode(),
        None => return Err(bad("field `msg_id` must be a string or an integer", id)),
    };
    if text.is_empty() || text.len() > MAX_MSG_ID_LEN {
        return Err(bad(format!("`msg_id` must be 1-{MAX_MSG_ID_LEN} bytes"), id));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("`msg_id` must not contain control characters", id));
    }
    Ok(Some(text.into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<Frame, DecodeError> {
        decode(s.as_bytes(), &mut Vec::new(), 128)
    }

    #[test]
    fn too_deep_is_refused_with_the_id() {
        let data = "[".repeat(200) + &"]".repeat(200);
        let e =
            d(&format!(r#"{{"type":"publish","id":"r-1","channel":"a:b","event":"e","data":{data}}}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("deeper than 128"), "{}", e.message);
        assert_eq!(e.id.as_deref(), Some("\"r-1\""));
        let e = d(&format!(r#"{{ "id" : 42 , "data":{data}}}"#)).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("42"));
        let e = d(&format!(r#"{{"data":{data},"id":42}}"#)).unwrap_err();
        assert_eq!(e.id, None);
        let e = d(&format!(r#"{{"id":{{"a":{data}}}}}"#)).unwrap_err();
        assert_eq!(e.id, None);
        let e = d(&("[".repeat(400_000) + &"]".repeat(400_000))).unwrap_err();
        assert_eq!(e.id, None);
        // 127 levels inside `data` + the frame itself = 128: accepted and kept verbatim.
        let data = "[".repeat(127) + &"]".repeat(127);
        let f = d(&format!(r#"{{"type":"publish","channel":"a:b","event":"e","data":{data}}}"#)).unwrap();
        assert!(matches!(f.request, Request::Publish { data: ref got, .. } if got == data.as_bytes()));
    }

    #[test]
    fn publish_keeps_data_and_id() {
        let f = d(r#"{"type":"publish","id":7,"channel":"room:1","event":"e","data":{"a":[1,"x"]}}"#).unwrap();
        assert_eq!(f.id.as_deref(), Some("7"));
        match f.request {
            Request::Publish { channel, event, data, msg_id, .. } => {
                assert_eq!(msg_id, None);
                assert_eq!(channel, "room:1");
                assert_eq!(event, "e");
                let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(v, serde_json::json!({"a":[1,"x"]}));
            }
            other => panic!("{other:?}"),
        }
        let f = d(r#"{"type":"ping","id":"a\"b"}"#).unwrap();
        assert_eq!(f.id.as_deref(), Some(r#""a\"b""#));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(d("{nope").unwrap_err().message, "malformed JSON");
        assert_eq!(d("[1]").unwrap_err().message, "a frame must be a JSON object");
        assert_eq!(d(r#"{"type":"dance","id":1}"#).unwrap_err().id.as_deref(), Some("1"));
        assert!(d(r#"{"type":"subscribe","channel":5}"#).unwrap_err().message.contains("channel"));
        assert!(d(r#"{"type":"subscribe"}"#).unwrap_err().message.contains("missing"));
        assert!(d(r#"{"type":"typing","channel":"a:b","state":"maybe"}"#).is_err());
        assert!(d(r#"{"type":7}"#).is_err());
        assert!(d(r#"{"type":"ping","id":{"x":1}}"#).is_err());
        assert!(d("").is_err());
        assert!(d(r#"{"type":"subscribe","channel":"dm:a:b","since":-1}"#).is_err());
        assert!(d(r#"{"type":"subscribe","channel":"dm:a:b","since":"3"}"#).is_err());
        assert!(d(r#"{"type":"ack","channel":"dm:a:b"}"#).is_err());
        assert!(d(r#"{"type":"publish","channel":"a:b","event":"e","msg_id":{"x":1}}"#).is_err());
        assert!(d(r#"{"type":"publish","channel":"a:b","event":"e","msg_id":""}"#).is_err());
        for bad in [r#""e\u0000""#, r#""e\n""#, r#""\u007f""#, r#""\u009b""#] {
            let e = d(&format!(r#"{{"type":"publish","id":3,"channel":"a:b","event":{bad}}}"#)).unwrap_err();
            assert!(e.message.contains("control characters"), "{bad}: {}", e.message);
            let e = d(&format!(r#"{{"type":"publish","channel":"a:b","event":"e","msg_id":{bad}}}"#)).unwrap_err();
            assert!(e.message.contains("control characters"), "{bad}: {}", e.message);
        }
    }

    fn data_of(s: &str) -> Vec<u8> {
        match d(s).unwrap().request {
            Request::Publish { data, .. } => data,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_is_the_exact_client_text() {
        let data = r#"{ "b" :[1, 2.50,1e3 ,"\u00e9\"]}" ],"a":{} }"#;
        for frame in [
            format!(r#"{{"type":"publish","channel":"a:b","event":"e","data":{data}}}"#),
            format!(r#"{{"type":"publish","channel":"a:b","data" :	{data}  ,"event":"e"}}"#),
            format!(r#"{{"x":{{"data":1}},"type":"publish","channel":"a:b","event":"e","data":{data},"data":7}}"#),
            format!(r#"{{"type":"publish","channel":"a:b","event":"e","d\u0061ta":{data},"data":7}}"#),
        ] {
            assert_eq!(String::from_utf8(data_of(&frame)).unwrap(), data, "{frame}");
        }
        for scalar in ["\"x y\"", "-1.5E+3", "true", "null", "[]", "\"\\\\\""] {
            let frame = format!(r#"{{"type":"publish","channel":"a:b","event":"e","data":{scalar} }}"#);
            assert_eq!(String::from_utf8(data_of(&frame)).unwrap(), scalar, "{frame}");
        }
        assert_eq!(data_of(r#"{"type":"publish","channel":"a:b","event":"e"}"#), b"null");
        // A raw control character inside a string of data: refused, whatever simd-json thinks.
        let e = d("{\"type\":\"publish\",\"channel\":\"a:b\",\"event\":\"e\",\"data\":\"a\tb\"}");
        assert!(e.is_err(), "{e:?}");
    }

    #[test]
    fn signature_fields() {
        let f = d(r#"{"type":"publish","channel":"a:b","event":"e","nonce":"n","sig_ts":17,"sig":"s"}"#).unwrap();
        let want = SigFields { nonce: Some("n".into()), sig_ts: Some(17), sig: Some("s".into()), wrong: None };
        assert!(matches!(f.request, Request::Publish { signed: Some(ref s), .. } if **s == want));
        let f = d(r#"{"type":"publish","channel":"a:b","event":"e","sig_ts":"17"}"#).unwrap();
        assert!(
            matches!(f.request, Request::Publish { signed: Some(ref s), .. } if s.sig_ts == Some(17) && s.nonce.is_none())
        );
        for (frame, wrong) in [
            (r#"{"type":"publish","channel":"a:b","event":"e","sig_ts":-1}"#, "sig_ts"),
            (r#"{"type":"publish","channel":"a:b","event":"e","sig_ts":1.5}"#, "sig_ts"),
            (r#"{"type":"publish","channel":"a:b","event":"e","sig_ts":"1x"}"#, "sig_ts"),
            (r#"{"type":"publish","channel":"a:b","event":"e","nonce":5}"#, "nonce"),
            (r#"{"type":"publish","channel":"a:b","event":"e","sig":[]}"#, "sig"),
        ] {
            let f = d(frame).unwrap();
            assert!(
                matches!(f.request, Request::Publish { signed: Some(ref s), .. } if s.wrong == Some(wrong)),
                "{frame}"
            );
        }
        let f = d(r#"{"type":"publish","channel":"a:b","event":"e"}"#).unwrap();
        assert!(matches!(f.request, Request::Publish { signed: None, .. }));
    }

    /// Whether this thread holds decode scratch.
    fn kept() -> bool {
        SCRATCH.with(|s| {
            let v = s.take();
            let kept = v.is_some();
            s.set(v);
            kept
        })
    }

    #[test]
    fn scratch_is_reused_and_huge_frames_give_it_back() {
        let ok = r#"{"type":"publish","id":1,"channel":"a:b","event":"e","data":{"k":[1,2,"v"]}}"#;
        let want = d(ok).unwrap();
        // A malformed frame and a non-object in between leave nothing behind for the next one.
        assert!(d(r#"{"type":"publish","channel":"#).is_err());
        assert!(d("[1,2,3]").is_err());
        assert_eq!(d(ok).unwrap(), want);
        assert!(kept());
        // A frame over the limit: decoded, then the thread's buffers are dropped, not kept.
        let big = "x".repeat(SCRATCH_KEEP_MAX);
        let f = d(&format!(r#"{{"type":"publish","channel":"a:b","event":"e","data":"{big}"}}"#)).unwrap();
        assert!(matches!(f.request, Request::Publish { ref data, .. } if data.len() == big.len() + 2));
        assert!(!kept());
        assert_eq!(d(ok).unwrap(), want);
        assert!(kept());
        // Threads do not share it.
        std::thread::spawn(move || assert_eq!(d(ok).unwrap(), want)).join().unwrap();
    }

    #[test]
    fn durable_fields() {
        let f = d(r#"{"type":"subscribe","channel":"dm:a:b","since":41}"#).unwrap();
        assert_eq!(f.request, Request::Subscribe { channel: "dm:a:b".into(), since: Some(41) });
        let f = d(r#"{"type":"ack","channel":"dm:a:b","seq":7}"#).unwrap();
        assert_eq!(f.request, Request::Ack { channel: "dm:a:b".into(), seq: 7 });
        let f = d(r#"{"type":"publish","channel":"dm:a:b","event":"e","msg_id":"m-1"}"#).unwrap();
        assert!(matches!(f.request, Request::Publish { msg_id: Some(m), .. } if &*m == "m-1"));
        let f = d(r#"{"type":"publish","channel":"dm:a:b","event":"e","msg_id":17}"#).unwrap();
        assert!(matches!(f.request, Request::Publish { msg_id: Some(m), .. } if &*m == "17"));
    }
}
