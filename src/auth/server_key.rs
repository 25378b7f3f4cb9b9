//! The server's Ed25519 identity (`SYNCGATE_SERVER_KEY`, else generated once and kept in the data
//! directory, mode 0600): clients pin its public key and check the server's signatures with it.
//! Instances of one deployment share it.

use std::path::Path;

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::{write_private, KeyError};
use crate::config::SERVER_KEY;

const KEY_FILE: &str = "server_key.pk8";

/// The key pair and the public forms clients see.
pub struct ServerKey {
    pair: Ed25519KeyPair,
    /// The first 16 hex characters of SHA-256 of the raw public key.
    pub key_id: String,
    /// The raw 32-byte public key, base64url without padding.
    pub public_key: String,
}

impl ServerKey {
    /// From the configured PKCS#8 DER, or the one kept in `data_dir` (made on first start).
    pub fn load(configured: Option<&[u8]>, data_dir: &Path) -> Result<ServerKey, KeyError> {
        let pair = match configured {
            Some(der) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| KeyError::Key(SERVER_KEY, "not an Ed25519 PKCS#8 key".into()))?,
            None => kept(data_dir)?,
        };
        let raw = pair.public_key().as_ref();
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        let key_id = crate::util::hex(&digest.as_ref()[..8]);
        let public_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        Ok(ServerKey { pair, key_id, public_key })
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Loads the key kept in the data directory, or makes and stores a new one (0600).
fn kept(dir: &Path) -> Result<Ed25519KeyPair, KeyError> {
    let path = dir.join(KEY_FILE);
    let io = |e| KeyError::Io(path.display().to_string(), e);
    let corrupt = || KeyError::Key("server key", format!("{} is corrupt; delete it", path.display()));
    if let Ok(der) = std::fs::read(&path) {
        return Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| corrupt());
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let rng = ring::rand::SystemRandom::new();
    let der =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Key("server key", "no system randomness".into()))?;
    write_private(&path, der.as_ref()).map_err(io)?;
    Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_kept_with_owner_only_access() {
        let dir = std::env::temp_dir().join(format!("sk-{}", crate::util::random_hex(6)));
        let a = ServerKey::load(None, &dir).unwrap();
        let b = ServerKey::load(None, &dir).unwrap();
        assert_eq!(a.public_key, b.public_key);
        assert_eq!(a.key_id.len(), 16);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Its signatures verify with the published key.
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&a.public_key).unwrap();
        let sig = a.sign(b"hello");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, raw).verify(b"hello", &sig).unwrap();
        std::fs::write(dir.join(KEY_FILE), b"junk").unwrap();
        assert!(ServerKey::load(None, &dir).is_err(), "a corrupt kept key is refused, never replaced");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_configured_v2_key_loads_from_base64() {
        let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let vars = [(SERVER_KEY.to_string(), b64)].into_iter().collect();
        let config = crate::config::Config::from_map(&vars).unwrap();
        let k = ServerKey::load(config.auth.server_key.as_deref(), Path::new("/nonexistent")).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
        assert_eq!(k.public_key, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()));
    }
}
