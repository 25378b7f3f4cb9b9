//! The PROXY protocol header (v1 text, v2 binary; haproxy.org `proxy-protocol.txt`) that a TCP
//! load balancer puts in front of each connection: read and validated before HTTP sees a byte,
//! so every per-address limit, log line and status uses the client's address.
//!
//! Bounded before parsed: v2 is read in exactly two steps (the 16-byte fixed part, then the length
//! it declares, at most [`V2_MAX_LEN`]); v1 is one line of at most [`V1_MAX`] bytes. Bytes of the
//! HTTP request that arrive in the same read as a v1 line are handed on by [`Proxied`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::config::ProxyProtocol;

/// The v2 signature.
pub const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the spec's worst case, `TCP6` with full addresses).
pub const V1_MAX: usize = 107;
/// The longest v2 address block plus TLVs accepted (a UNIX address is 216 bytes; HAProxy's TLVs
/// add a few hundred at most). Longer headers are refused, not read.
pub const V2_MAX_LEN: usize = 1024;
const V2_FIXED: usize = 16;

/// Why a connection's header was refused (the connection is then closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY protocol signature")]
    Signature,
    #[error("unsupported PROXY protocol version or command")]
    Version,
    #[error("unknown address family or transport")]
    Family,
    #[error("declared length out of bounds")]
    Length,
    #[error("malformed address")]
    Address,
    #[error("malformed port")]
    Port,
    #[error("header line too long or badly terminated")]
    Line,
    #[error("connection closed inside the header")]
    Closed,
    /// Closed before sending a byte: a plain TCP health check, not a bad header.
    #[error("connection closed before any byte")]
    Empty,
    #[error("header not complete within the handshake timeout")]
    Timeout,
    #[error("read failed: {0}")]
    Io(String),
}

/// A parse step's outcome on the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not yet complete: at least this many bytes in total are needed.
    Need(usize),
    /// The header is `len` bytes; `source` is the client address (`None`: keep the socket's own,
    /// as for a v2 LOCAL health check or an UNSPEC / UNKNOWN / UNIX source).
    Done { len: usize, source: Option<SocketAddr> },
}

/// Parses a v2 header at the start of `buf`.
pub fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let sig = buf.len().min(V2_SIG.len());
    if buf[..sig] != V2_SIG[..sig] {
        return Err(ProxyError::Signature);
    }
    if buf.len() < V2_FIXED {
        return Ok(Parsed::Need(V2_FIXED));
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyError::Version);
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ProxyError::Family);
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > V2_MAX_LEN {
        return Err(ProxyError::Length);
    }
    let total = V2_FIXED + len;
    if buf.len() < total {
        return Ok(Parsed::Need(total));
    }
    let body = &buf[V2_FIXED..total];
    // Each family's address block must fit in the declared length; what follows it is TLVs,
    // which are skipped (the length covers them).
    let needed = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < needed {
        return Err(ProxyError::Length);
    }
    // LOCAL: the proxy's own connection (health checks); UDP or UNIX sources carry no client IP.
    let source = match (command, family, transport) {
        (1, 1, 1) => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
        }
        (1, 2, 1) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([body[32], body[33]])))
        }
        _ => None,
    };
    Ok(Parsed::Done { len: total, source })
}

/// Parses a v1 line at the start of `buf` (bytes after the CRLF are not looked at).
pub fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    const PREFIX: &[u8] = b"PROXY ";
    let p = buf.len().min(PREFIX.len());
    if buf[..p] != PREFIX[..p] {
        return Err(ProxyError::Signature);
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|b| *b == b'\r' || *b == b'\n') else {
        return if buf.len() >= V1_MAX { Err(ProxyError::Line) } else { Ok(Parsed::Need(buf.len() + 1)) };
    };
    if window[cr] != b'\r' {
        return Err(ProxyError::Line);
    }
    match window.get(cr + 1) {
        None if cr + 1 < V1_MAX => return Ok(Parsed::Need(cr + 2)),
        Some(b'\n') => {}
        _ => return Err(ProxyError::Line),
    }
    let len = cr + 2;
    let line = std::str::from_utf8(&window[PREFIX.len()..cr]).map_err(|_| ProxyError::Line)?;
    if !line.is_ascii() {
        return Err(ProxyError::Line);
    }
    // "UNKNOWN" may be followed by anything up to the CRLF; the receiver ignores it.
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Parsed::Done { len, source: None });
    }
    let mut parts = line.split(' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProxyError::Line);
    };
    let (src, _dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| ProxyError::Address)?),
            IpAddr::V4(dst.parse().map_err(|_| ProxyError::Address)?),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| ProxyError::Address)?),
            IpAddr::V6(dst.parse().map_err(|_| ProxyError::Address)?),
        ),
        _ => return Err(ProxyError::Family),
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(Parsed::Done { len, source: Some(SocketAddr::new(src, sport)) })
}

/// A decimal port 0..=65535 without sign or leading zeros.
fn port(s: &str) -> Result<u16, ProxyError> {
    let ok =
        !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err(ProxyError::Port);
    }
    s.parse().map_err(|_| ProxyError::Port)
}

/// Reads the header `mode` asks for from `stream` (no deadline here: the caller bounds it).
/// Returns the HTTP bytes read past a v1 line (hand them on with [`Proxied::new`]) and the client
/// address the header carries (`None`: keep the socket's own).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    mode: ProxyProtocol,
) -> Result<(Vec<u8>, Option<SocketAddr>), ProxyError> {
    let parse = match mode {
        ProxyProtocol::V1 => parse_v1,
        ProxyProtocol::V2 | ProxyProtocol::Off => parse_v2,
    };
    // v1 lines are short; a v2 header is read exactly, so nothing past it is ever consumed.
    let mut buf = [0u8; V2_FIXED + V2_MAX_LEN];
    let mut filled = 0;
    let mut want = match mode {
        ProxyProtocol::V1 => V1_MAX,
        _ => V2_FIXED,
    };
    loop {
        let n = stream.read(&mut buf[filled..want]).await.map_err(|e| ProxyError::Io(e.to_string()))?;
        if n == 0 {
            return Err(if filled == 0 { ProxyError::Empty } else { ProxyError::Closed });
        }
        filled += n;
        match parse(&buf[..filled])? {
            Parsed::Need(total) => {
                if mode != ProxyProtocol::V1 {
                    want = total;
                }
            }
            Parsed::Done { len, source } => {
                return Ok((buf[len..filled].to_vec(), source));
            }
        }
    }
}

/// A stream with bytes already read from it put back in front (the start of the HTTP request
/// that came in the same read as a v1 header). Writes go straight through.
pub struct Proxied<S> {
    rest: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Proxied<S> {
    /// `stream` with `rest` (bytes already read from it) in front.
    pub fn new(rest: Vec<u8>, stream: S) -> Proxied<S> {
        Proxied { rest, pos: 0, inner: stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Proxied<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.rest.len() {
            let n = (this.rest.len() - this.pos).min(out.remaining());
            out.put_slice(&this.rest[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.rest.len() {
                this.rest = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Proxied<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | command);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn inet4(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut b = src.to_vec();
        b.extend_from_slice(&[10, 0, 0, 1]);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&8080u16.to_be_bytes());
        b
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v2_inet_inet6_and_tlvs_skipped() {
        let h = v2(1, 0x11, &inet4([192, 0, 2, 7], 51000));
        assert_eq!(parse_v2(&h), Ok(Parsed::Done { len: 28, source: addr("192.0.2.7:51000") }));
        // TLVs after the address block are skipped; HTTP bytes after the header are not read.
        let mut body = inet4([192, 0, 2, 7], 1);
        body.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c', 0xEE, 0xFF, 0xFF]);
        let mut h = v2(1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse_v2(&h), Ok(Parsed::Done { len, source: addr("192.0.2.7:1") }));
        let mut body = vec![0u8; 36];
        body[15] = 1;
        body[32..34].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(parse_v2(&v2(1, 0x21, &body)), Ok(Parsed::Done { len: 52, source: addr("[::1]:443") }));
    }

    #[test]
    fn v2_local_unspec_unix_and_udp_keep_the_socket_address() {
        assert_eq!(parse_v2(&v2(0, 0x00, &[])), Ok(Parsed::Done { len: 16, source: None }));
        // LOCAL with an address block: the addresses are ignored.
        assert_eq!(parse_v2(&v2(0, 0x11, &inet4([1, 2, 3, 4], 5))), Ok(Parsed::Done { len: 28, source: None }));
        assert_eq!(parse_v2(&v2(1, 0x00, &[1, 2, 3])), Ok(Parsed::Done { len: 19, source: None }));
        assert_eq!(parse_v2(&v2(1, 0x31, &[0u8; 216])), Ok(Parsed::Done { len: 232, source: None }));
        assert_eq!(parse_v2(&v2(1, 0x12, &inet4([1, 2, 3, 4], 5))), Ok(Parsed::Done { len: 28, source: None }));
    }

    #[test]
    fn v2_hostile_inputs() {
        let good = v2(1, 0x11, &inet4([192, 0, 2, 7], 51000));
        // Every truncation asks for more, never reads past what the header declares.
        for cut in 0..good.len() {
            let need = if cut < 16 { 16 } else { 28 };
            assert_eq!(parse_v2(&good[..cut]), Ok(Parsed::Need(need)), "cut {cut}");
        }
        assert_eq!(parse_v2(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Signature));
        assert_eq!(parse_v2(b"\r\n\r\n\0\r\nQUIX\n"), Err(ProxyError::Signature));
        assert_eq!(parse_v2(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Err(ProxyError::Signature));
        let mut bad = good.clone();
        bad[12] = 0x11; // version 1 in binary form
        assert_eq!(parse_v2(&bad), Err(ProxyError::Version));
        bad[12] = 0x22; // command 2
        assert_eq!(parse_v2(&bad), Err(ProxyError::Version));
        let mut bad = good.clone();
        bad[13] = 0x41;
        assert_eq!(parse_v2(&bad), Err(ProxyError::Family));
        bad[13] = 0x13;
        assert_eq!(parse_v2(&bad), Err(ProxyError::Family));
        // Declared length larger than accepted: refused before anything more is read.
        let mut big = good[..16].to_vec();
        big[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse_v2(&big), Err(ProxyError::Length));
        big[14..16].copy_from_slice(&((V2_MAX_LEN + 1) as u16).to_be_bytes());
        assert_eq!(parse_v2(&big), Err(ProxyError::Length));
        // A length too short for the family's addresses.
        assert_eq!(parse_v2(&v2(1, 0x11, &[1, 2, 3, 4])), Err(ProxyError::Length));
        assert_eq!(parse_v2(&v2(1, 0x21, &[0u8; 35])), Err(ProxyError::Length));
        assert_eq!(parse_v2(&v2(1, 0x31, &[0u8; 100])), Err(ProxyError::Length));
    }

    #[test]
    fn v1_valid_lines() {
        let l = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse_v1(l), Ok(Parsed::Done { len: 42, source: addr("192.0.2.7:51000") }));
        let l = b"PROXY TCP6 2001:db8::7 ::1 0 443\r\n";
        assert_eq!(parse_v1(l), Ok(Parsed::Done { len: l.len(), source: addr("[2001:db8::7]:0") }));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Done { len: 15, source: None }));
        let l = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse_v1(l), Ok(Parsed::Done { len: l.len(), source: None }));
        // The longest legal line (UNKNOWN with two full IPv6 addresses) is exactly 107 bytes.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let l = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(l.len(), V1_MAX);
        assert_eq!(parse_v1(l.as_bytes()), Ok(Parsed::Done { len: V1_MAX, source: None }));
        let l = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(parse_v1(l.as_bytes()), Ok(Parsed::Done { len: l.len(), source: addr(&format!("[{full}]:65535")) }));
    }

    #[test]
    fn v1_hostile_inputs() {
        let good = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\n";
        for cut in 0..good.len() {
            assert!(matches!(parse_v1(&good[..cut]), Ok(Parsed::Need(_))), "cut {cut}");
        }
        let bad: &[(&[u8], ProxyError)] = &[
            (b"GET / HTTP/1.1\r\n", ProxyError::Signature),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ProxyError::Signature),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", ProxyError::Line),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", ProxyError::Line),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", ProxyError::Line),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", ProxyError::Line),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", ProxyError::Line),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", ProxyError::Line),
            (b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n", ProxyError::Line),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", ProxyError::Family),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", ProxyError::Address),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", ProxyError::Address),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", ProxyError::Address),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", ProxyError::Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.x 1 2\r\n", ProxyError::Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", ProxyError::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", ProxyError::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", ProxyError::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", ProxyError::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n", ProxyError::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", ProxyError::Port),
        ];
        for (input, want) in bad {
            assert_eq!(parse_v1(input).as_ref(), Err(want), "{}", String::from_utf8_lossy(input));
        }
        // No CRLF within 107 bytes: refused without reading further.
        let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
        assert_eq!(parse_v1(long.as_bytes()), Err(ProxyError::Line));
        let l = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 15));
        assert_eq!(l.len(), V1_MAX + 1);
        assert_eq!(parse_v1(l.as_bytes()), Err(ProxyError::Line));
    }

    #[tokio::test]
    async fn bytes_after_a_v1_line_are_handed_on() {
        let input: &[u8] = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n\r\n";
        let mut input = input;
        let (rest, source) = read_header(&mut input, ProxyProtocol::V1).await.unwrap();
        assert_eq!(source, addr("192.0.2.7:51000"));
        let mut s = Proxied::new(rest, input);
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_is_read_exactly() {
        let mut input = v2(1, 0x11, &inet4([192, 0, 2, 7], 9));
        input.extend_from_slice(b"GET /");
        let mut stream = &input[..];
        let (rest, source) = read_header(&mut stream, ProxyProtocol::V2).await.unwrap();
        assert_eq!(source, addr("192.0.2.7:9"));
        assert!(rest.is_empty());
        let mut s = Proxied::new(rest, stream);
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET /");
        let cases: [(&[u8], ProxyProtocol, ProxyError); 4] = [
            (&input[..20], ProxyProtocol::V2, ProxyError::Closed),
            (b"", ProxyProtocol::V1, ProxyError::Empty),
            (b"PROXY ", ProxyProtocol::V1, ProxyError::Closed),
            (b"GET / HTTP/1.1", ProxyProtocol::V2, ProxyError::Signature),
        ];
        for (mut input, mode, want) in cases {
            assert_eq!(read_header(&mut input, mode).await.err(), Some(want));
        }
    }
}
