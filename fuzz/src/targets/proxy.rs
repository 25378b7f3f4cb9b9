//! `server::proxy::parse_v1` / `parse_v2`: the PROXY protocol header a load balancer (or anyone
//! reaching the port) sends before HTTP. Invariants: no panic; a complete header lies within the
//! input and the spec's bounds and starts with its signature; more bytes are never asked beyond
//! the bounds; a verdict on a prefix never changes with bytes after the header, and a refused
//! prefix is never accepted once more bytes arrive; an address comes from the bytes it names.

use std::net::{IpAddr, SocketAddr};

use syncgate::server::proxy::{parse_v1, parse_v2, Parsed, ProxyError, V1_MAX, V2_MAX_LEN, V2_SIG};

use super::{fail, mix};
use crate::corpus::Corpus;
use crate::rng::Rng;
use crate::runner::{preview, Target};

const DICT: &[&[u8]] = &[
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"65535",
    b"65536",
    b"0",
    b"00",
    b"255.255.255.255",
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    b"::ffff:1.2.3.4",
    b"\r\n\r\n\0\r\nQUIT\n",
    b"\x21\x11",
    b"\x20\x00",
    b"\x21\x21",
    b"\x21\x31",
    b"\xff\xff",
    b"\x04\x00",
    b"\x00\x0c",
];

pub struct Proxy;

type Parser = fn(&[u8]) -> Result<Parsed, ProxyError>;

fn structured(rng: &mut Rng) -> Vec<u8> {
    let port = |rng: &mut Rng| rng.one(&[0u32, 1, 80, 8080, 65535, 65536, 99999]).to_string();
    if rng.chance(1, 2) {
        let ip4 = |rng: &mut Rng| format!("{}.{}.{}.{}", rng.byte(), rng.byte(), rng.byte(), rng.byte());
        let line = match rng.below(4) {
            0 => format!("PROXY TCP4 {} {} {} {}\r\n", ip4(rng), ip4(rng), port(rng), port(rng)),
            1 => format!("PROXY TCP6 2001:db8::{:x} ::1 {} {}\r\n", rng.byte(), port(rng), port(rng)),
            2 => format!("PROXY UNKNOWN {}\r\n", "f".repeat(rng.small(120))),
            _ => format!("PROXY TCP4 {} {}\r\n", ip4(rng), port(rng)),
        };
        let mut v = line.into_bytes();
        v.extend_from_slice(b"GET /ws HTTP/1.1\r\n");
        return v;
    }
    let mut v = V2_SIG.to_vec();
    v.push(rng.one(&[0x20, 0x21, 0x22, 0x11, 0x2f]));
    v.push(rng.one(&[0x00, 0x11, 0x12, 0x21, 0x31, 0x41, 0x13]));
    let len = match rng.below(4) {
        0 => rng.one(&[0usize, 11, 12, 35, 36, 215, 216]),
        1 => rng.one(&[V2_MAX_LEN, V2_MAX_LEN + 1, 65535]),
        _ => rng.small(300),
    };
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend((0..len.min(rng.range(0, 1100))).map(|_| rng.byte()));
    v
}

/// One parser's verdict on `input` and every prefix of it, checked against the invariants.
fn check(input: &[u8], v1: bool) -> Result<(), String> {
    let (name, parse, max): (&str, Parser, usize) =
        if v1 { ("parse_v1", parse_v1, V1_MAX) } else { ("parse_v2", parse_v2, 16 + V2_MAX_LEN) };
    let verdict = super::timed(name, input.len(), || parse(input))?;
    match &verdict {
        Ok(Parsed::Need(n)) if *n <= input.len() || *n > max => {
            return fail(&format!("{name} asks for an impossible length"), format!("{n} for {}", preview(input, 120)));
        }
        Ok(Parsed::Done { len, source }) => {
            let head = &input[..(*len).min(input.len())];
            let ok = *len <= input.len()
                && *len <= max
                && if v1 { head.starts_with(b"PROXY ") && head.ends_with(b"\r\n") } else { head.starts_with(&V2_SIG) };
            if !ok {
                return fail(&format!("{name} accepted a header outside its bounds"), preview(input, 120));
            }
            // Bytes after the header change nothing.
            if parse(head) != verdict {
                return fail(&format!("{name} depends on bytes after the header"), preview(input, 120));
            }
            if let (false, Some(src)) = (v1, source) {
                let ip_ok = match src.ip() {
                    IpAddr::V4(ip) => input[13] == 0x11 && ip.octets() == input[16..20],
                    IpAddr::V6(ip) => input[13] == 0x21 && ip.octets() == input[16..32],
                };
                let port_at = if src.is_ipv4() { 24 } else { 48 };
                if input[12] != 0x21 || !ip_ok || src.port() != u16::from_be_bytes([input[port_at], input[port_at + 1]])
                {
                    return fail("parse_v2 returned an address the header does not carry", preview(input, 120));
                }
            }
            if let (true, Some(src)) = (v1, source) {
                let line = String::from_utf8_lossy(&head[6..head.len() - 2]).into_owned();
                let mut parts = line.split(' ');
                let (_, ip, _, port) = (parts.next(), parts.next(), parts.next(), parts.next());
                let want: Option<SocketAddr> = ip
                    .and_then(|i| i.parse().ok())
                    .zip(port.and_then(|p| p.parse().ok()))
                    .map(|(i, p)| SocketAddr::new(i, p));
                if want != Some(*src) {
                    return fail("parse_v1 returned an address the line does not carry", preview(input, 120));
                }
            }
        }
        _ => {}
    }
    // Sticky refusals: a refused prefix stays refused with more bytes, and an accepted header
    // was never refused or complete earlier.
    let end = match &verdict {
        Ok(Parsed::Done { len, .. }) => *len,
        _ => input.len(),
    };
    for cut in 0..end.min(max + 1) {
        let earlier = parse(&input[..cut]);
        let bad = matches!((&earlier, &verdict), (Err(_), Ok(_)) | (Ok(Parsed::Done { .. }), _));
        if bad {
            return fail(
                &format!("{name} changes its verdict with more bytes"),
                format!("{earlier:?} at {cut} then {verdict:?} for {}", preview(input, 120)),
            );
        }
    }
    Ok(())
}

impl Target for Proxy {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn generate(&mut self, rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
        mix(rng, corpus, DICT, structured)
    }

    fn execute(&mut self, input: &[u8]) -> Result<(), String> {
        check(input, true)?;
        check(input, false)
    }
}
