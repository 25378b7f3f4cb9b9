//! Channel authorization beyond the token: namespaces only the server publishes to.

use super::reader::Reader;

/// Namespaces where clients may subscribe (under the usual rules) but never publish: only the
/// server API and external Redis publishes reach them (comma list; empty: none).
pub const SERVER_PUBLISH_NAMESPACES: &str = "SYNCGATE_SERVER_PUBLISH_NAMESPACES";

/// Channel authorization.
#[derive(Clone)]
pub struct AuthzConfig {
    /// Namespaces no client may publish to, whatever its token grants (empty: none).
    pub server_publish_namespaces: Vec<String>,
}

impl AuthzConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let server_publish_namespaces = r.list(SERVER_PUBLISH_NAMESPACES);
        for ns in &server_publish_namespaces {
            if !crate::channel::valid_namespace(ns) {
                r.error(format!("{SERVER_PUBLISH_NAMESPACES}: {ns:?} is not a namespace"));
            }
        }
        AuthzConfig { server_publish_namespaces }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.push((SERVER_PUBLISH_NAMESPACES, self.server_publish_namespaces.join(",")));
    }
}
