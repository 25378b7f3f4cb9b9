//! # syncgate — a real-time WebSocket gateway
//!
//! ## Layout
//! - [`config`]: one typed `Config` read from `SYNCGATE_*` env vars; bad values stop start-up.
//! - [`devices`]: batched device sightings, in-memory revocation check.
//! - [`durable`]: durable streams: group-committed writer, per-channel `seq`, replay, read
//!   positions, retention.
//! - [`error`]: error enums and the one mapping to HTTP status / JSON body / close code.
//! - [`server`]: accept loop (PROXY protocol header first when configured; the admin listener),
//!   HTTP routing, middleware in front of the upgrade (origin, per-IP rate, JWT, per-user cap),
//!   two-step shutdown.
//! - [`ws`]: the RFC 6455 upgrade, the per-connection session (reader, batched writer, pending
//!   backend requests), bounded writes and lingering close, durable replays, the echo endpoint.
//! - [`protocol`]: protocol v1 frames; decode with simd-json, encode once into `Bytes`.
//! - [`api`]: REST handlers (server API: publish, disconnect).
//! - [`bus`]: `Bus` trait; in-process and Redis (fred) implementations; the Redis wire format.
//! - [`registry`]: sharded channel membership, presence, user slots, zero-copy fan-out.
//! - [`channel`]: channel names and authorization rules.
//! - [`auth`]: JWT verification (HS256 secret, PEM key, JWKS) and token minting.
//! - [`limits`]: message token bucket and per-IP connect limiter.
//! - [`cli`]: `syncgate token`.
//! - [`mail`]: SMTP delivery of reset codes (lettre).
//! - [`metrics`]: Prometheus text for `/metrics`.
//! - [`oslimits`]: open files, somaxconn, port range; raised and checked at start.
//! - [`store`]: sqlx store (SQLite default, PostgreSQL): accounts, refresh tokens.
//! - [`shutdown`]: SIGTERM/SIGINT as a future.
//! - [`util`]: small shared helpers; [`util::json`] bounds untrusted JSON before any parser sees it.
//!
//! ## How a message travels
//! client frame → `ws::session` (rate limit, `protocol::decode`: frame pre-scan, then simd-json) → `channel::authorize` →
//! `protocol::event` encodes once → `registry::Registry::fan_out` pushes a clone into each
//! member's bounded queue → each member's session swaps its queue out and writes it in one flush.
//! A durable channel's publish goes to `durable`'s writer instead: one transaction per batch
//! assigns `seq`s, then the event is encoded once, fanned out and acknowledged.

pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
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
pub mod registry;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod util;
pub mod ws;
