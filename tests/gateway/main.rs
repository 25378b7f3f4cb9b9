//! Integration tests: a real syncgate on 127.0.0.1:0 and real WebSocket clients. One test binary
//! (modules below) so the suite links once.

/// One test per store: SQLite (the default) and a fresh PostgreSQL database. `flow(env)` gets the
/// store's variables; with `server`, `flow(&server)` runs against a server started on them.
macro_rules! on_both_stores {
    ($sqlite:ident, $postgres:ident, server $flow:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let s = crate::common::Server::start(&[]).await;
            $flow(&s).await;
            s.stop().await;
        }

        #[tokio::test]
        async fn $postgres() {
            let url = crate::accounts::fresh_pg_database().await;
            let s = crate::common::Server::start(&[("DATABASE_URL", url.as_str())]).await;
            $flow(&s).await;
            s.stop().await;
        }
    };
    ($sqlite:ident, $postgres:ident, $flow:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $flow(&[]).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let url = crate::accounts::fresh_pg_database().await;
            $flow(&[("DATABASE_URL", url.as_str())]).await;
        }
    };
}

mod account_security;
mod accounts;
mod auth;
mod auth_limits;
mod authz;
mod batch;
mod bus_contract;
mod cluster;
mod common;
mod compose;
mod device_attacks;
mod device_keys;
mod durable;
mod hostile;
mod issuers;
mod js_client;
mod key_login;
mod lifecycle;
mod limits;
mod login_page;
mod ops;
mod pairing;
mod protocol;
mod proxy;
mod quotas;
mod redis_deploy;
mod seam;
mod server_api;
mod server_key;
mod signed;
mod webhooks;
