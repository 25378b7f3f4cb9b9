//! Signed frames: the namespaces whose client publishes must carry the sending device's Ed25519
//! signature, and how far a signature's clock may be from the gateway's.

use std::time::Duration;

use super::reader::Reader;

/// Namespaces whose client publishes must be signed by the device key (comma list; empty: none).
pub const SIGNED_NAMESPACES: &str = "SYNCGATE_SIGNED_NAMESPACES";
/// A signed publish's `sig_ts` may differ from the gateway's clock by at most this; a nonce is
/// remembered until its `sig_ts` plus this has passed.
pub const SIGNATURE_WINDOW_SECS: &str = "SYNCGATE_SIGNATURE_WINDOW_SECS";

/// Signed frames.
#[derive(Clone)]
pub struct SignedConfig {
    /// Namespaces whose client publishes must carry `nonce`, `sig_ts` and `sig` (empty: none).
    pub namespaces: Vec<String>,
    /// The accepted distance between `sig_ts` and the gateway's clock (1 s to 1 day), and how
    /// long each nonce is remembered after its `sig_ts`.
    pub window: Duration,
}

impl SignedConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let namespaces = r.list(SIGNED_NAMESPACES);
        for ns in &namespaces {
            if !crate::channel::valid_namespace(ns) {
                r.error(format!("{SIGNED_NAMESPACES}: {ns:?} is not a namespace"));
            }
        }
        SignedConfig { namespaces, window: Duration::from_secs(r.ranged(SIGNATURE_WINDOW_SECS, 300, 1, 86_400)) }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (SIGNED_NAMESPACES, self.namespaces.join(",")),
            (SIGNATURE_WINDOW_SECS, self.window.as_secs().to_string()),
        ]);
    }

    /// True when `channel` (canonical name) is in a signed namespace.
    pub fn is_signed(&self, channel: &str) -> bool {
        if self.namespaces.is_empty() {
            return false;
        }
        let ns = channel.split_once(':').map_or(channel, |(ns, _)| ns);
        self.namespaces.iter().any(|n| n == ns)
    }
}
