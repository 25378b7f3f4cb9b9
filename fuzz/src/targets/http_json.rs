//! `api::parse_json`: HTTP request bodies (server API publish/disconnect, accounts). The body
//! structs are private to their handlers, so look-alikes with the same fields and attributes are
//! declared here. Invariants: no panic; a body is accepted only when it is valid JSON within
//! `max_depth`; `serde_json::Value` reads what the reference parser reads and re-serialises to
//! valid JSON; a valid body is not refused as `Value`; the publish body's raw `data` makes a
//! valid event frame.

use serde::Deserialize;
use serde_json::value::RawValue;
use syncgate::api::parse_json;

use super::{depths, fail, from_serde, key, mix, output_json, stir, str_value, write_object};
use crate::corpus::Corpus;
use crate::gen;
use crate::refjson::{self, close, same, Parsed};
use crate::rng::Rng;
use crate::runner::{preview, Target};

// Look-alikes of the bodies in src/api/server_api.rs and src/api/accounts.rs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PublishBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DisconnectBody {
    user_id: String,
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct RegisterBody {
    email: String,
    password: String,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct LoginBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
    password: String,
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct ResetBody {
    email: String,
    otp: String,
    new_password: String,
}

const DICT: &[&[u8]] =
    &[b"\"channel\":\"a:b\",", b"\"event\":\"e\",", b"\"data\":", b"\"password\":\"p\",", b"\"email\":"];

const FIELDS: &[&str] = &[
    "channel",
    "event",
    "data",
    "msg_id",
    "user_id",
    "device_id",
    "email",
    "password",
    "username",
    "refresh_token",
    "current_password",
    "new_password",
    "otp",
];

pub struct HttpJson;

fn structured(rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::new();
    let shape: &[&str] = match rng.below(6) {
        0 | 1 => &["channel", "event", "data", "msg_id"],
        2 => &["user_id", "device_id"],
        3 => &["email", "password", "username", "device_id"],
        4 => &["refresh_token", "current_password", "new_password"],
        _ => &["email", "otp", "new_password"],
    };
    for &f in shape {
        if rng.chance(1, 8) {
            continue;
        }
        let v = if f == "data" {
            let mut v = Vec::new();
            gen::value(rng, &mut v, 5);
            v
        } else {
            str_value(rng, &["a:b", "room:1", "e", "alice@example.com", "hunter2", "dm:a:b", "123456"])
        };
        m.push((key(f), v));
    }
    if rng.chance(1, 10) {
        m.push((key(rng.one(FIELDS)), str_value(rng, &["x"])));
    }
    stir(rng, &mut m);
    if rng.chance(1, 10) {
        let mut v = Vec::new();
        gen::value(rng, &mut v, 5);
        return v;
    }
    write_object(rng, &m)
}

/// Accepted only if valid JSON within the depth (lone surrogates are refused by serde's strings).
fn accepted_ok(parsed: &Result<Parsed, String>, depth: usize, what: &str, input: &[u8]) -> Result<(), String> {
    match parsed {
        Err(e) => fail(&format!("{what}: accepted invalid JSON"), format!("{e}: {}", preview(input, 200))),
        Ok(p) if p.info.depth > depth => fail(&format!("{what}: accepted nesting deeper than max_depth"), p.info.depth),
        Ok(_) => Ok(()),
    }
}

impl Target for HttpJson {
    fn name(&self) -> &'static str {
        "http_json"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let parsed = refjson::parse(input, true);
        for depth in depths(input) {
            let value =
                super::timed("parse_json::<Value>", input.len(), || parse_json::<serde_json::Value>(input, depth))?;
            match value {
                Ok(v) => {
                    accepted_ok(&parsed, depth, "Value", input)?;
                    let Ok(p) = &parsed else { unreachable!() };
                    if p.info.lone_surrogate || p.info.invalid_utf8 {
                        return fail("Value: accepted a lone surrogate or invalid UTF-8", preview(input, 200));
                    }
                    let text = serde_json::to_vec(&v).map_err(|e| format!("Value does not serialise | {e}"))?;
                    let again = output_json(&text, true, "re-serialised Value")?;
                    if let Some(tree) = &p.tree {
                        // (Numbers at the edge of f64: serde may read MAX where the true value is
                        // beyond it.)
                        if !p.info.dup_keys && !p.info.float_overflow && !close(&from_serde(&v), tree) {
                            return fail("Value differs from the reference parse", preview(input, 300));
                        }
                    }
                    if !same(&again, &from_serde(&v)) {
                        return fail("Value changes when re-serialised", preview(&text, 300));
                    }
                }
                Err(e) => {
                    if let Ok(p) = &parsed {
                        let i = &p.info;
                        if !i.lone_surrogate && !i.invalid_utf8 && !i.float_overflow && i.depth <= depth {
                            return fail("Value: refused valid JSON", format!("{e}: {}", preview(input, 200)));
                        }
                    }
                }
            }
            if let Ok(body) = parse_json::<PublishBody>(input, depth) {
                accepted_ok(&parsed, depth, "PublishBody", input)?;
                let data = body.data.as_deref().map(|d| d.get().as_bytes()).unwrap_or(b"null");
                let frame = syncgate::protocol::server_event(&body.channel, &body.event, data, 1);
                // `data` is forwarded verbatim (lone surrogates included).
                let out = output_json(frame.as_bytes(), false, "published event frame")?;
                let want = output_json(data, false, "raw data")?;
                if !out.get("data").is_some_and(|d| same(d, &want)) {
                    return fail("the event frame does not carry the body's data", preview(frame.as_bytes(), 300));
                }
            }
            if let Ok(raw) = parse_json::<Box<RawValue>>(input, depth) {
                accepted_ok(&parsed, depth, "RawValue", input)?;
                output_json(raw.get().as_bytes(), false, "RawValue")?;
            }
            let checks = [
                ("DisconnectBody", parse_json::<DisconnectBody>(input, depth).is_ok()),
                ("RegisterBody", parse_json::<RegisterBody>(input, depth).is_ok()),
                ("LoginBody", parse_json::<LoginBody>(input, depth).is_ok()),
                ("RefreshBody", parse_json::<RefreshBody>(input, depth).is_ok()),
                ("ChangePasswordBody", parse_json::<ChangePasswordBody>(input, depth).is_ok()),
                ("ResetBody", parse_json::<ResetBody>(input, depth).is_ok()),
                ("IgnoredAny", parse_json::<serde::de::IgnoredAny>(input, depth).is_ok()),
            ];
            for (what, ok) in checks {
                if ok {
                    accepted_ok(&parsed, depth, what, input)?;
                }
            }
        }
        Ok(())
    }
}
