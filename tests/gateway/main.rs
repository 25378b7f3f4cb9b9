//! Integration tests: a real syncgate on 127.0.0.1:0 and real WebSocket clients. One test binary
//! (modules below) so the suite links once.

mod accounts;
mod auth;
mod bus_contract;
mod cluster;
mod common;
mod durable;
mod lifecycle;
mod limits;
mod login_page;
mod ops;
mod protocol;
