//! The external-event parser: a plain-JSON Redis payload `{"event":E,"data":ANY}` published by
//! someone else's code, turned into an `event` frame for the channel's members.
//!
//! The target calls the gateway's own `syncgate::bus::external_event`.
//!
//! Invariants: no panic; accepted payloads are valid JSON within `max_depth`; the frame is valid
//! JSON whose `event` and `data` are the payload's; a payload with a valid event is not refused.

use syncgate::bus::external_event;
use syncgate::protocol;

use super::{depths, fail, key, mix, output_json, stir, str_value, struct_field, write_object};
use crate::corpus::Corpus;
use crate::gen;
use crate::refjson::{self, same, J};
use crate::rng::Rng;
use crate::runner::{preview, Target};

const CHANNEL: &str = "room:fuzz";

const DICT: &[&[u8]] = &[b"\"event\":", b"\"data\":", b"\"event\":\"e\",", b"\"event\":\"e\",\"event\":\"f\""];

pub struct External;

fn structured(rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::new();
    let long = super::long(rng.range(250, 260));
    m.push((key("event"), str_value(rng, &["e", "message", "", &long])));
    if rng.chance(4, 5) {
        let mut d = Vec::new();
        gen::value(rng, &mut d, 4);
        m.push((key("data"), d));
    }
    stir(rng, &mut m);
    write_object(rng, &m)
}

impl Target for External {
    fn name(&self) -> &'static str {
        "external"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        let parsed = refjson::parse(input, true);
        for depth in depths(input) {
            let r = super::timed("external_event", input.len(), || external_event(CHANNEL, input, depth))?;
            let p = match (&parsed, &r) {
                (Err(e), Ok(_)) => return fail("accepted invalid JSON", format!("{e}: {}", preview(input, 200))),
                (Err(_), Err(_)) => continue,
                (Ok(p), _) => p,
            };
            let tree = p.tree.as_ref();
            let event = tree.and_then(|t| struct_field(t, "event", 0)).and_then(J::as_str);
            match &r {
                Ok(frame) => {
                    if p.info.depth > depth {
                        return fail("accepted nesting deeper than max_depth", p.info.depth);
                    }
                    // `data` is forwarded verbatim, so a lone surrogate in it is passed on as is.
                    let out = output_json(frame.as_bytes(), false, "external event frame")?;
                    let Some(tree) = tree else { continue };
                    if p.info.dup_keys {
                        continue;
                    }
                    let ok = out.get("channel").and_then(J::as_str) == Some(CHANNEL)
                        && out.get("event").and_then(J::as_str) == event
                        && out.get("data").is_some_and(|d| same(d, struct_field(tree, "data", 1).unwrap_or(&J::Null)));
                    if !ok {
                        return fail(
                            "the frame does not carry the payload's event and data",
                            preview(frame.as_bytes(), 300),
                        );
                    }
                }
                Err(e) => {
                    let valid_event = event.is_some_and(|ev| !ev.is_empty() && ev.len() <= protocol::MAX_EVENT_LEN);
                    if valid_event
                        && matches!(tree, Some(J::Obj(_)))
                        && !p.info.dup_keys
                        && !p.info.lone_surrogate
                        && !p.info.invalid_utf8
                        && p.info.depth <= depth
                    {
                        return fail("refused a valid external event", format!("{e}: {}", preview(input, 200)));
                    }
                }
            }
        }
        Ok(())
    }
}
