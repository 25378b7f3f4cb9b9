//! `--auth key`: key login (`/ws?auth=key`) for the connect and idle scenarios.
//!
//! Set-up, before the timed open phase: every device connects once with a token bound to it
//! (`did`; the gateway lists the device before `welcome`), closes, and registers a fresh Ed25519
//! key with `PUT /api/devices/{id}/key`. The timed connect then reads the server's challenge,
//! verifies its signature with the key `GET /api/server-key` published, and answers with the
//! device's signature: one more round trip and two signatures (plus two verifications) per
//! connect compared with a token.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::plan::ConnSpec;

/// Set-up requests in flight at once.
const SETUP_CONCURRENCY: usize = 128;

/// The server's public key and every device's key pair.
pub struct DeviceKeys {
    server_key: Vec<u8>,
    devices: HashMap<(String, String), Ed25519KeyPair>,
}

/// One HTTP/1.1 request (`Connection: close`): status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("http connect: {}", e.kind()))?;
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: loadtest\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| format!("http write: {}", e.kind()))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| format!("http read: {}", e.kind()))?;
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or("http: no status line")?;
    Ok((status, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

fn http_addr(url: &str) -> Result<SocketAddr, String> {
    let (host, port) = crate::worker::host_port(url).ok_or("bad url")?;
    let ip: IpAddr = match host.as_str() {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| "only IP or localhost hosts are supported".to_string())?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn new_pair(rng: &ring::rand::SystemRandom) -> Result<Ed25519KeyPair, String> {
    let mut seed = [0u8; 32];
    rng.fill(&mut seed).map_err(|_| "no system randomness")?;
    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| "bad seed".to_string())
}

/// Registers a key for every device of `specs` (see the module docs). Not timed.
pub async fn setup(
    specs: &[ConnSpec],
    secret: &str,
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> Result<DeviceKeys, String> {
    let first = specs.first().ok_or("no connections")?;
    let (status, body) = http(http_addr(&first.url)?, "GET", "/api/server-key", None, "").await?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| format!("/api/server-key: HTTP {status}"))?;
    let server_key = v["public_key"]
        .as_str()
        .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
        .ok_or("/api/server-key: no public_key (a gateway without key login?)")?;
    let rng = ring::rand::SystemRandom::new();
    let mut devices = HashMap::with_capacity(specs.len());
    let mut jobs = Vec::with_capacity(specs.len());
    for spec in specs {
        let pair = new_pair(&rng)?;
        let pk = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        devices.insert((spec.user.clone(), spec.device.clone()), pair);
        jobs.push((spec, pk));
    }
    let results: Vec<Result<(), String>> = futures_util::stream::iter(jobs)
        .map(|(spec, pk)| async move {
            let token = crate::worker::device_token(secret, &spec.user, &spec.device);
            // Once with the token, so that the gateway lists the device (no channels).
            let plain = ConnSpec { channels: Vec::new(), ..spec.clone() };
            let ws = tokio::time::timeout(timeout, crate::worker::open(&plain, &token, source, None))
                .await
                .map_err(|_| "set-up connect: timeout".to_string())??;
            drop(ws);
            let addr = http_addr(&spec.url)?;
            let path = format!("/api/devices/{}/key", spec.device);
            let body = format!(r#"{{"public_key":"{pk}"}}"#);
            // The device's row may still be in the gateway's write batch: retry a 404 briefly.
            for _ in 0..50 {
                match http(addr, "PUT", &path, Some(&token), &body).await? {
                    (200, _) => return Ok(()),
                    (404, _) => tokio::time::sleep(Duration::from_millis(100)).await,
                    (s, b) => return Err(format!("PUT key: HTTP {s}: {b}")),
                }
            }
            Err("PUT key: the device was never listed".to_string())
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        return Err(format!("key set-up failed for {} device(s), first: {first}", failed.len()));
    }
    Ok(DeviceKeys { server_key, devices })
}

impl DeviceKeys {
    /// The answer to `challenge` (its text) for `user`'s `device`, after checking the server's
    /// signature on it.
    pub fn answer(&self, user: &str, device: &str, challenge: &str) -> Result<String, String> {
        let v: serde_json::Value = serde_json::from_str(challenge).map_err(|_| "challenge: not JSON")?;
        let (Some("challenge"), Some(n), Some(ts), Some(sig)) =
            (v["type"].as_str(), v["nonce"].as_str(), v["ts"].as_u64(), v["sig"].as_str())
        else {
            return Err(format!("expected a challenge, got {challenge}"));
        };
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "challenge: bad sig")?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.server_key)
            .verify(format!("syncgate-challenge-v1\n{n}\n{ts}").as_bytes(), &sig)
            .map_err(|_| "challenge: not signed by the server key")?;
        let pair = self.devices.get(&(user.to_string(), device.to_string())).ok_or("no key for the device")?;
        let pk = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let cn = crate::worker::wall_us().to_string();
        let cn = format!("lt-{cn:0>16}");
        let text = format!("syncgate-device-auth-v1\n{n}\n{cn}\n{device}\n{pk}");
        let cs = URL_SAFE_NO_PAD.encode(pair.sign(text.as_bytes()));
        Ok(format!(
            r#"{{"type":"auth","device_id":"{device}","public_key":"{pk}","client_nonce":"{cn}","sig":"{cs}"}}"#
        ))
    }
}
