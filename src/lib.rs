//! # syncgate — a real-time WebSocket gateway
//!
//! ## Layout
//! Modules in dependency order: each imports only modules of a lower layer (checked by the
//! `layout` test below, which fails when a lower layer imports a higher one).
//!
//! ```text
//! 13 server      accept loop (PROXY header first when configured; the admin listener), routing,
//!                two-step shutdown
//! 12 ws, api     the WebSocket session (open, reader, writer, durable replays, echo endpoint);
//!                REST handlers (accounts, devices, history, login page, server API, OpenAPI)
//! 11 admission, publish  the checks in front of the upgrade and the one rule for verified
//!                claims; publishing an event (live or durable) for the session and the server API,
//!                signed publishes checked first (device key, Ed25519, window, nonce)
//! 10 app, cli    AppState::build: the shared state and every background task; `syncgate token`
//!  9 durable     durable streams: group-committed writer, per-channel seq, replay, positions,
//!                retention, per-user quotas
//!  8 webhooks    presence transitions and undelivered dm events, queued (bounded) and POSTed in
//!                signed batches with retries
//!  7 bus, devices  Bus trait (in-process, Redis via fred); batched device sightings
//!  6 registry    sharded channel membership, presence, user slots, zero-copy fan-out; the
//!                observer traits the cluster bus and the webhooks implement
//!  5 error       error enums and the one mapping to HTTP status / JSON body / close code
//!  4 store       sqlx store (SQLite default, PostgreSQL)
//!  3 auth, authz, oslimits  JWT verification and minting, token generations, signed-frame
//!                text, Ed25519 check and nonce memory; the authorization hook (cached,
//!                coalesced, bounded); OS limits at start
//!  2 config      one typed Config from SYNCGATE_* (bad values stop start-up), one part per
//!                concern: listener, auth, accounts, limits, durable, redis, store
//!  1 channel, protocol  channel names and authorization; protocol v1 frames (simd-json in,
//!                encode once into Bytes out)
//!  0 util, identity, routes, limits, metrics, mail, shutdown   leaves: clock, hex, Bearer
//!                parsing, bounded JSON; who a connection is and device-id rules; the route
//!                list; rate limiters; the one registry of metric series (every layer counts
//!                into it; `/metrics` renders it); SMTP; SIGTERM as a future
//! ```
//!
//! ## How a message travels
//! client frame → `ws::session` (rate limit, `protocol::decode`: frame pre-scan, then simd-json) → `channel::authorize` →
//! `publish::Publisher`: `protocol::event` encodes once → `registry::Registry::fan_out` pushes a clone into each
//! member's bounded queue → each member's session swaps its queue out and writes it in one flush.
//! A publish on a signed channel (`SYNCGATE_SIGNED_NAMESPACES`) is checked first by
//! `publish::signed` (the device key, the signature over the exact `data` text, `sig_ts`, the nonce).
//! A durable channel's publish goes to `durable`'s writer instead: one transaction per batch
//! assigns `seq`s, then the event is encoded once, fanned out and acknowledged.

pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
pub mod authz;
pub mod bus;
pub mod channel;
pub mod cli;
pub mod config;
pub mod devices;
pub mod durable;
pub mod error;
pub mod identity;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod oslimits;
pub mod protocol;
pub mod publish;
pub mod registry;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod util;
pub mod webhooks;
pub mod ws;

#[cfg(test)]
mod layout {
    /// The layer of every top-level module, as the `Layout` map above draws it.
    const LAYERS: &[(&str, u8)] = &[
        ("util", 0),
        ("identity", 0),
        ("routes", 0),
        ("limits", 0),
        ("metrics", 0),
        ("mail", 0),
        ("shutdown", 0),
        ("channel", 1),
        ("protocol", 1),
        ("config", 2),
        ("auth", 3),
        ("authz", 3),
        ("oslimits", 3),
        ("store", 4),
        ("error", 5),
        ("registry", 6),
        ("bus", 7),
        ("devices", 7),
        ("webhooks", 8),
        ("durable", 9),
        ("app", 10),
        ("cli", 10),
        ("admission", 11),
        ("publish", 11),
        ("api", 12),
        ("ws", 12),
        ("server", 13),
    ];

    fn layer(module: &str) -> Option<u8> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `crate::<module>` a file names outside its `#[cfg(test)]` part (an approximation
    /// that holds for this code base: tests sit at the end of a file).
    fn imports(text: &str) -> Vec<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut found = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                for part in group.split(',') {
                    let name: String =
                        part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    found.push(name);
                }
            } else {
                found.push(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
            }
        }
        found.retain(|n| !n.is_empty());
        found
    }

    #[test]
    fn lower_layers_never_import_higher_ones() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&src).expect("under src").to_string_lossy().to_string();
            let module = rel.split('/').next().unwrap_or("").trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let own = layer(&module).unwrap_or_else(|| panic!("src/{rel}: module {module} is not in LAYERS"));
            let text = std::fs::read_to_string(&file).expect("readable");
            for dep in imports(&text) {
                if dep == module {
                    continue;
                }
                match layer(&dep) {
                    Some(l) if l < own => {}
                    Some(l) => wrong.push(format!("src/{rel}: {module} (layer {own}) imports {dep} (layer {l})")),
                    None => {}
                }
            }
        }
        assert!(wrong.is_empty(), "imports against the layout:\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_module_has_a_layer() {
        for line in include_str!("lib.rs").lines() {
            if let Some(name) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')) {
                assert!(layer(name).is_some(), "{name} is not in LAYERS");
            }
        }
    }
}
