//! `protocol::decode`: client WebSocket text frames. Invariants: no panic; anything accepted is
//! strict JSON within `max_depth` and decodes to exactly what the reference parser reads; every
//! reply or event built from the result is valid JSON carrying the same values; errors echo an
//! `id` that is the frame's own.

use syncgate::protocol::{self, decode, DecodeError, Frame as Decoded, Request, Stamp};

use super::{depths, fail, key, mix, output_json, stir, str_value, write_object};
use crate::corpus::Corpus;
use crate::gen;
use crate::refjson::{self, same, Parsed, J};
use crate::rng::Rng;
use crate::runner::{preview, Target};

/// The id the gateway accepts (`MAX_ID_LEN`).
const MAX_ID_LEN: usize = 128;
/// What `encode::finish` falls back to when an encoder wrote non-UTF-8.
const FALLBACK: &str = "{\"type\":\"error\",\"code\":\"internal\"}";

const DICT: &[&[u8]] = &[
    b"\"type\":\"publish\",",
    b"\"id\":",
    b"\"data\":",
    b"\"channel\":\"a:b\",",
    b"\"event\":\"e\",",
    b"\"msg_id\":",
    b"\"since\":",
    b"\"publish\"",
    b"\"subscribe\"",
    b"\"ack\"",
    b"\"typing\"",
];

const KINDS: &[&str] =
    &["auth", "subscribe", "unsubscribe", "ack", "publish", "publish", "publish", "typing", "presence", "ping"];
const CHANNELS: &[&str] = &["room:1", "a:b", "dm:alice:bob", "user:alice", "public:lobby", "x", ""];

#[derive(Default)]
pub struct Frame {
    buf: Vec<u8>,
}

fn num_value(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    match rng.below(4) {
        0 => gen::number(rng, &mut v),
        1 => gen::value(rng, &mut v, 1),
        _ => v.extend_from_slice(rng.below(1000).to_string().as_bytes()),
    }
    v
}

fn structured(rng: &mut Rng) -> Vec<u8> {
    let kind = rng.one(KINDS);
    let mut m: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    m.push((key("type"), if rng.chance(9, 10) { gen::quote(kind).into_bytes() } else { str_value(rng, KINDS) }));
    if rng.chance(1, 2) {
        let id = match rng.below(4) {
            0 => num_value(rng),
            1 => gen::quote(&super::long(rng.range(100, 140))).into_bytes(),
            _ => str_value(rng, &["r-1", "42", "\"", "\\"]),
        };
        m.push((key("id"), id));
    }
    let channel = |rng: &mut Rng| str_value(rng, CHANNELS);
    match kind {
        "auth" => m.push((key("token"), str_value(rng, &["eyJhbGciOiJIUzI1NiJ9.e30.x", ""]))),
        "subscribe" | "unsubscribe" | "presence" => {
            m.push((key("channel"), channel(rng)));
            if rng.chance(1, 2) {
                m.push((key("since"), num_value(rng)));
            }
        }
        "ack" => {
            m.push((key("channel"), channel(rng)));
            m.push((key("seq"), num_value(rng)));
        }
        "typing" => {
            m.push((key("channel"), channel(rng)));
            m.push((key("state"), str_value(rng, &["start", "stop"])));
        }
        "publish" => {
            m.push((key("channel"), channel(rng)));
            let long_event = super::long(rng.range(250, 260));
            m.push((key("event"), str_value(rng, &["e", "message", &long_event])));
            let mut data = Vec::new();
            gen::value(rng, &mut data, 4);
            m.push((key("data"), data));
            if rng.chance(1, 2) {
                let long_id = super::long(rng.range(125, 130));
                let v = if rng.chance(1, 2) { num_value(rng) } else { str_value(rng, &["m-1", "", &long_id]) };
                m.push((key("msg_id"), v));
            }
        }
        _ => {}
    }
    stir(rng, &mut m);
    write_object(rng, &m)
}

fn kind_of(r: &Request) -> &'static str {
    match r {
        Request::Auth { .. } => "auth",
        Request::Subscribe { .. } => "subscribe",
        Request::Unsubscribe { .. } => "unsubscribe",
        Request::Publish { .. } => "publish",
        Request::Ack { .. } => "ack",
        Request::Typing { .. } => "typing",
        Request::Presence { .. } => "presence",
        Request::Ping => "ping",
    }
}

/// The decoded `id` (JSON text) against the frame's member.
fn check_id(id: Option<&str>, member: Option<&J>, what: &str) -> Result<(), String> {
    match (id, member) {
        (None, None) => Ok(()),
        (Some(text), Some(m)) => {
            let j = output_json(text.as_bytes(), true, "the decoded id")?;
            if !matches!(j, J::Str(_) | J::Num(_)) || text.len() > MAX_ID_LEN || !same(&j, m) {
                return fail(&format!("{what}: the id differs from the frame's"), format!("{text} vs {m:?}"));
            }
            Ok(())
        }
        (a, b) => fail(&format!("{what}: the id differs from the frame's"), format!("{a:?} vs {b:?}")),
    }
}

fn str_member<'a>(tree: &'a J, k: &str) -> Option<&'a str> {
    tree.get(k).and_then(J::as_str)
}

/// u64 fields (`since`, `seq`): the member's value.
fn u64_member(tree: &J, k: &str) -> Option<u64> {
    match tree.get(k) {
        Some(J::Num(n)) => n.parse::<u64>().ok().or_else(|| (n == "-0").then_some(0)),
        _ => None,
    }
}

/// The decoded values against the reference parse of the frame.
fn check_fields(frame: &Decoded, tree: &J) -> Result<(), String> {
    check_id(frame.id.as_deref(), tree.get("id"), "accepted frame")?;
    let kind = kind_of(&frame.request);
    if str_member(tree, "type") != Some(kind) {
        return fail("decoded type differs", format!("{kind} vs {:?}", tree.get("type")));
    }
    let same_str = |field: &str, got: &str| -> Result<(), String> {
        if str_member(tree, field) != Some(got) {
            return fail(&format!("decoded `{field}` differs"), format!("{got:?} vs {:?}", tree.get(field)));
        }
        Ok(())
    };
    match &frame.request {
        Request::Auth { token } => same_str("token", token)?,
        Request::Subscribe { channel, since } => {
            same_str("channel", channel)?;
            let want = match tree.get("since") {
                None | Some(J::Null) => None,
                Some(_) => u64_member(tree, "since"),
            };
            if *since != want {
                return fail("decoded `since` differs", format!("{since:?} vs {:?}", tree.get("since")));
            }
        }
        Request::Ack { channel, seq } => {
            same_str("channel", channel)?;
            if Some(*seq) != u64_member(tree, "seq") {
                return fail("decoded `seq` differs", format!("{seq} vs {:?}", tree.get("seq")));
            }
        }
        Request::Unsubscribe { channel } | Request::Presence { channel } => same_str("channel", channel)?,
        Request::Typing { channel, typing } => {
            same_str("channel", channel)?;
            if str_member(tree, "state") != Some(if *typing { "start" } else { "stop" }) {
                return fail("decoded `state` differs", format!("{typing} vs {:?}", tree.get("state")));
            }
        }
        Request::Publish { channel, event, data, msg_id, .. } => {
            same_str("channel", channel)?;
            same_str("event", event)?;
            if event.is_empty() || event.len() > protocol::MAX_EVENT_LEN {
                return fail("accepted an event name out of bounds", event.len());
            }
            let d = output_json(data, true, "decoded `data`")?;
            if !same(&d, tree.get("data").unwrap_or(&J::Null)) {
                return fail(
                    "decoded `data` differs from the frame's",
                    format!("{} vs {:?}", preview(data, 200), tree.get("data")),
                );
            }
            match (msg_id.as_deref(), tree.get("msg_id")) {
                (None, None | Some(J::Null)) => {}
                (Some(m), Some(J::Str(s))) if m == s => {}
                (Some(m), Some(J::Num(n))) if refjson::same_number(m, n) && m.parse::<i128>().is_ok() => {}
                (a, b) => return fail("decoded `msg_id` differs", format!("{a:?} vs {b:?}")),
            }
            if let Some(m) = msg_id.as_deref() {
                if m.is_empty() || m.len() > 128 {
                    return fail("accepted a msg_id out of bounds", m.len());
                }
            }
        }
        Request::Ping => {}
    }
    Ok(())
}

fn check_encoded(frame: &str, kind: &str) -> Result<J, String> {
    if frame == FALLBACK {
        return fail("an encoder wrote invalid UTF-8", kind);
    }
    let j = output_json(frame.as_bytes(), true, kind)?;
    if !matches!(j, J::Obj(_)) {
        return fail(&format!("{kind} is not an object"), frame);
    }
    Ok(j)
}

/// Replies and events built from an accepted frame.
fn check_replies(frame: &Decoded) -> Result<(), String> {
    let id = &frame.id;
    let check_id_echo = |out: &J, what: &str| check_id(id.as_deref(), out.get("id"), what);
    match &frame.request {
        Request::Publish { channel, event, data, msg_id, .. } => {
            let d = output_json(data, true, "decoded `data`")?;
            let ts = 1_700_000_000_123;
            let frames = [
                ("event frame", protocol::event(channel, event, data, "user-1", "dev-1", ts)),
                ("server event frame", protocol::server_event(channel, event, data, ts)),
                (
                    "durable event frame",
                    protocol::durable_event(
                        channel,
                        event,
                        data,
                        Some(("user-1", "dev-1")),
                        ts,
                        Stamp { seq: 42, msg_id: msg_id.as_deref() },
                        None,
                    ),
                ),
            ];
            for (what, f) in &frames {
                let out = check_encoded(f, what)?;
                let ok = out.get("type") == Some(&J::Str("event".into()))
                    && out.get("channel").and_then(J::as_str) == Some(channel.as_str())
                    && out.get("event").and_then(J::as_str) == Some(event.as_str())
                    && out.get("data").is_some_and(|x| same(x, &d));
                if !ok {
                    return fail(&format!("{what} does not carry the published values"), preview(f.as_bytes(), 300));
                }
            }
            let durable = frames[2].1.as_bytes();
            if syncgate::channel::valid_name(channel) && protocol::event_seq(durable) != Some((channel.as_bytes(), 42))
            {
                return fail("event_seq misreads a durable event", preview(durable, 300));
            }
            let ack = protocol::durable_ack(id, channel, 7, msg_id.as_deref(), true);
            check_id_echo(&check_encoded(&ack, "durable ack")?, "durable ack")?;
        }
        Request::Subscribe { channel, .. } | Request::Unsubscribe { channel } | Request::Presence { channel } => {
            let r = protocol::channel_reply("subscribed", channel, id);
            check_id_echo(&check_encoded(&r, "channel reply")?, "channel reply")?;
            let st = protocol::StreamState { seq: u64::MAX, read_seq: 0, recovered: Some(true) };
            check_encoded(&protocol::subscribed_durable(channel, &st, id), "subscribed frame")?;
        }
        Request::Ack { channel, seq } => {
            check_encoded(&protocol::read_ack(id, channel, *seq), "read ack")?;
        }
        Request::Typing { channel, typing } => {
            check_encoded(&protocol::typing(channel, "user-1", "dev-1", *typing), "typing frame")?;
        }
        Request::Auth { .. } | Request::Ping => {
            let p = protocol::pong(1, id);
            check_id_echo(&check_encoded(&p, "pong")?, "pong")?;
        }
    }
    Ok(())
}

fn accepted(parsed: &Result<Parsed, String>, depth: usize, frame: &Decoded, input: &[u8]) -> Result<(), String> {
    let p = match parsed {
        Ok(p) => p,
        Err(e) => {
            if junk_after_scalar(input) {
                return fail("decode accepted junk after a number or literal", format!("{e}: {}", preview(input, 300)));
            }
            return fail("decode accepted invalid JSON", format!("{e}: {}", preview(input, 300)));
        }
    };
    if p.info.invalid_utf8 {
        return fail("decode accepted invalid UTF-8", preview(input, 300));
    }
    if p.info.lone_surrogate {
        return fail("decode accepted a lone UTF-16 surrogate escape", format!("{frame:?}"));
    }
    if p.info.depth > depth {
        return fail("decode accepted nesting deeper than max_depth", format!("{} > {depth}", p.info.depth));
    }
    let Some(tree) = &p.tree else { return fail("accepted frame nests too deep to compare", p.info.depth) };
    if !matches!(tree, J::Obj(_)) {
        return fail("decode accepted a non-object", preview(input, 100));
    }
    if !p.info.dup_keys {
        if let Err(e) = check_fields(frame, tree) {
            if p.info.huge_exponent {
                return fail("decode misread a number with an exponent of 2^31 or more", e);
            }
            return Err(e);
        }
    }
    check_replies(frame)
}

/// True when the input is valid JSON once the junk simd-json skips after a scalar is cut off
/// (see [`refjson::cut_scalar_junk`]).
fn junk_after_scalar(input: &[u8]) -> bool {
    refjson::cut_scalar_junk(input).is_some_and(|cut| refjson::parse(&cut, false).is_ok())
}

fn refused(parsed: &Result<Parsed, String>, depth: usize, e: &DecodeError) -> Result<(), String> {
    if e.message.is_empty() {
        return fail("a decode error without a message", format!("{e:?}"));
    }
    let reply = protocol::error(e.code, &e.message, &e.id);
    let out = check_encoded(&reply, "error frame")?;
    if out.get("message").and_then(J::as_str) != Some(e.message.as_str()) {
        return fail("error frame lost the message", reply.as_str());
    }
    let p = match parsed {
        Ok(p) => p,
        Err(_) => {
            if let Some(id) = e.id.as_deref() {
                // Invalid JSON: the id may still be read (a frame too deep to parse). It must be
                // a JSON string or number.
                let j = output_json(id.as_bytes(), true, "echoed id")?;
                if !matches!(j, J::Str(_) | J::Num(_)) || id.len() > MAX_ID_LEN {
                    return fail("echoed id is not a short JSON string or number", id);
                }
            }
            return Ok(());
        }
    };
    if let Some(tree) = &p.tree {
        if !p.info.dup_keys && e.id.is_some() {
            if p.info.lone_surrogate && check_id(e.id.as_deref(), tree.get("id"), "").is_err() {
                return fail("echoed id altered by a lone UTF-16 surrogate escape", format!("{:?}", e.id));
            }
            if p.info.huge_exponent && check_id(e.id.as_deref(), tree.get("id"), "").is_err() {
                return fail("decode misread a number with an exponent of 2^31 or more", format!("{:?}", e.id));
            }
            check_id(e.id.as_deref(), tree.get("id"), "refused frame")?;
        }
    }
    let i = &p.info;
    let plain = !i.lone_surrogate && !i.invalid_utf8 && !i.big_int && !i.float_overflow && !i.huge_exponent;
    if e.message.contains("deeper than") && p.info.depth <= depth {
        return fail("decode refused nesting within max_depth", format!("{} <= {depth}", p.info.depth));
    }
    if e.message == "malformed JSON" && plain && p.info.depth <= depth {
        return fail("decode refused valid JSON", format!("{:?}", p.info));
    }
    if e.message == "a frame must be a JSON object" && p.tree.as_ref().is_some_and(|t| matches!(t, J::Obj(_))) {
        return fail("decode called an object a non-object", "");
    }
    Ok(())
}

impl Target for Frame {
    fn name(&self) -> &'static str {
        "frame"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let parsed = refjson::parse(input, true);
        for depth in depths(input) {
            let buf = &mut self.buf;
            match super::timed("decode", input.len(), || decode(input, buf, depth))? {
                Ok(frame) => accepted(&parsed, depth, &frame, input)?,
                Err(e) => refused(&parsed, depth, &e)?,
            }
        }
        Ok(())
    }
}
