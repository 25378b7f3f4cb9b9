//! Channel authorization beyond the token: namespaces only the server publishes to, and the
//! authorization hook asked about channels the token does not grant.

use std::time::Duration;

use super::reader::Reader;

/// The hook's URL (`http://` or `https://`); unset: no hook, ungranted channels are `forbidden`.
pub const AUTHZ_URL: &str = "SYNCGATE_AUTHZ_URL";
/// Sent as `Authorization: Bearer <token>` with every hook request (a secret).
pub const AUTHZ_TOKEN: &str = "SYNCGATE_AUTHZ_TOKEN";
/// The namespaces the hook governs (comma list), or `*` for every non-public namespace.
pub const AUTHZ_NAMESPACES: &str = "SYNCGATE_AUTHZ_NAMESPACES";
/// How long a decision is cached when the hook names no `ttl_secs` (0 to 3600).
pub const AUTHZ_CACHE_SECS: &str = "SYNCGATE_AUTHZ_CACHE_SECS";
/// A hook request that takes longer (waiting for a free slot included) is a failure.
pub const AUTHZ_TIMEOUT_MS: &str = "SYNCGATE_AUTHZ_TIMEOUT_MS";
/// Hook requests in flight at once per instance (more wait for a slot within their timeout).
pub const AUTHZ_CONCURRENCY: &str = "SYNCGATE_AUTHZ_CONCURRENCY";

/// Namespaces where clients may subscribe (under the usual rules) but never publish: only the
/// server API and external Redis publishes reach them (comma list; empty: none).
pub const SERVER_PUBLISH_NAMESPACES: &str = "SYNCGATE_SERVER_PUBLISH_NAMESPACES";

/// Channel authorization.
#[derive(Clone)]
pub struct AuthzConfig {
    /// Namespaces no client may publish to, whatever its token grants (empty: none).
    pub server_publish_namespaces: Vec<String>,
    /// The authorization hook (`None`: no hook).
    pub url: Option<String>,
    /// The hook's bearer token (masked in `describe`).
    pub token: Option<String>,
    /// Namespaces the hook governs; `["*"]`: every non-public namespace. Empty: none.
    pub namespaces: Vec<String>,
    /// Default decision lifetime (the hook's `ttl_secs` overrides it, at most 3600 s).
    pub cache: Duration,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl AuthzConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let server_publish_namespaces = r.list(SERVER_PUBLISH_NAMESPACES);
        for ns in &server_publish_namespaces {
            if !crate::channel::valid_namespace(ns) {
                r.error(format!("{SERVER_PUBLISH_NAMESPACES}: {ns:?} is not a namespace"));
            }
        }
        let url = r.raw(AUTHZ_URL).map(str::to_string);
        if let Some(u) = &url {
            let ok = u.parse::<http::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                r.error(format!("{AUTHZ_URL}: {u:?} is not an http:// or https:// URL"));
            }
        }
        let token = r.raw(AUTHZ_TOKEN).map(str::to_string);
        let namespaces = r.list(AUTHZ_NAMESPACES);
        for ns in &namespaces {
            if ns != "*" && (ns == "user" || ns == "dm" || !crate::channel::valid_namespace(ns)) {
                r.error(format!("{AUTHZ_NAMESPACES}: {ns:?} cannot be governed by the hook"));
            }
        }
        if url.is_none() && !namespaces.is_empty() {
            r.error(format!("{AUTHZ_NAMESPACES} is set but {AUTHZ_URL} is not"));
        }
        let cache = Duration::from_secs(r.ranged(AUTHZ_CACHE_SECS, 60, 0, 3600));
        let timeout = Duration::from_millis(r.ranged(AUTHZ_TIMEOUT_MS, 1000, 1, 60_000));
        let concurrency = r.ranged(AUTHZ_CONCURRENCY, 64, 1, 10_000) as usize;
        AuthzConfig { server_publish_namespaces, url, token, namespaces, cache, timeout, concurrency }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (SERVER_PUBLISH_NAMESPACES, self.server_publish_namespaces.join(",")),
            (AUTHZ_URL, self.url.as_deref().map(super::mask_url).unwrap_or_else(|| "(unset)".into())),
            (AUTHZ_TOKEN, if self.token.is_some() { "***".into() } else { "(unset)".into() }),
            (AUTHZ_NAMESPACES, self.namespaces.join(",")),
            (AUTHZ_CACHE_SECS, self.cache.as_secs().to_string()),
            (AUTHZ_TIMEOUT_MS, self.timeout.as_millis().to_string()),
            (AUTHZ_CONCURRENCY, self.concurrency.to_string()),
        ]);
    }

    /// Whether the hook decides on `channel` (canonical name, already refused by the token's
    /// rights and outside `user:`, `dm:` and the public namespaces).
    pub fn governs(&self, channel: &str) -> bool {
        self.url.is_some() && self.namespaces.iter().any(|n| n == "*" || n == crate::channel::namespace(channel))
    }
}
