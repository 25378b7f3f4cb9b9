//! From `REDIS_URL` (parsed by the configuration) to fred's configuration: one node, Sentinel
//! or Cluster, and TLS with the public web roots or a private CA (`SYNCGATE_REDIS_CA_FILE`).

use std::sync::Arc;

use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, Server, ServerConfig, TlsConfig, TlsConnector};

use super::BusError;
use crate::config::{RedisKind, RedisTarget};

/// fred's configuration for `target`.
pub(super) fn fred_config(target: &RedisTarget, ca_file: Option<&std::path::Path>) -> Result<Config, BusError> {
    let hosts: Vec<Server> = target.hosts.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect();
    let server = match target.kind {
        RedisKind::Single => ServerConfig::Centralized { server: hosts[0].clone() },
        RedisKind::Sentinel => {
            ServerConfig::Sentinel { hosts, service_name: target.service.clone().unwrap_or_default() }
        }
        RedisKind::Cluster => ServerConfig::Clustered { hosts, policy: ClusterDiscoveryPolicy::default() },
    };
    let tls = match target.tls {
        true => Some(tls_config(ca_file)?),
        false => None,
    };
    Ok(Config {
        server,
        username: target.username.clone(),
        password: target.password.clone(),
        database: target.db,
        tls,
        ..Config::default()
    })
}

/// rustls (ring) trusting the web roots, or only the CA in `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<TlsConfig, BusError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| BusError::Tls(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| BusError::Tls(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| BusError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(BusError::Tls(format!("{}: no certificate", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BusError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfig::from(TlsConnector::from(config)))
}
