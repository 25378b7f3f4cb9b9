//! # loadtest — syncgate's capacity planner
//!
//! - [`args`]: the command line.
//! - [`accounts`]: the goose login storm with a WebSocket latency probe (`loadtest accounts`).
//! - [`keys`]: `--auth key`: device keys registered before the run, key login's answer.
//! - [`plan`]: which connections each scenario opens, where, as whom; open-loop send pacing.
//! - [`worker`]: a worker process: paced connects, traffic, latency from intended send times.
//! - [`churn`]: connections that connect, subscribe, publish and leave in rounds; server RSS and
//!   open fds after every round (`loadtest churn`).
//! - [`failover`]: durable dm pairs through a balancer while a command kills or restarts
//!   instances behind it: reconnect times, lost and duplicated events, the closes' spread
//!   (`loadtest failover`).
//! - [`run`]: the parent: spawns workers (and optionally the gateway), drives steps, merges.
//! - [`hist`]: HDR histograms (µs), sharded recording, lossless merge across processes.
//! - [`slo`]: thresholds from TOML and their evaluation (exit code 1 when broken).
//! - [`sampler`]: server memory and CPU from `/proc`.

pub mod accounts;
pub mod args;
pub mod churn;
pub mod failover;
pub mod hist;
pub mod keys;
pub mod plan;
pub mod run;
pub mod sampler;
pub mod slo;
pub mod worker;
