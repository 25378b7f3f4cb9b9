//! The checks in front of the upgrade, in order: origin, per-IP connect rate, credentials
//! (`?token=` then `Authorization: Bearer`, or `?auth=key` for key login), device id, per-user connection slot (RAII guard).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::Request;

use crate::app::AppState;
use crate::auth::AuthError;
use crate::error::HttpError;
use crate::identity::{valid_device_id, Identity};
use crate::limits::ClientAddresses;
use crate::registry::UserSlot;

/// One admitted connection against `SYNCGATE_MAX_CONNECTIONS` (and, once the per-address rate
/// let it through, one for its client address); released on drop.
pub struct AdmitGuard(Arc<std::sync::atomic::AtomicU64>, Option<(Arc<ClientAddresses>, IpAddr)>);

impl AdmitGuard {
    /// Takes a place if fewer than `max` (0: unlimited) are taken.
    pub fn try_new(gauge: &Arc<std::sync::atomic::AtomicU64>, max: u64) -> Option<AdmitGuard> {
        use std::sync::atomic::Ordering;
        let before = gauge.fetch_add(1, Ordering::Relaxed);
        let guard = AdmitGuard(gauge.clone(), None);
        (max == 0 || before < max).then_some(guard)
    }

    /// Counts the place against `ip` in `addresses` until it is released.
    fn for_address(mut self, addresses: &Arc<ClientAddresses>, ip: IpAddr) -> AdmitGuard {
        addresses.add(ip);
        self.1 = Some((addresses.clone(), ip));
        self
    }
}

impl Drop for AdmitGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((addresses, ip)) = &self.1 {
            addresses.remove(*ip);
        }
    }
}

/// What passed admission and moves into the connection task.
pub struct Admitted {
    /// The instance-wide connection place (load shedding).
    pub _place: AdmitGuard,
    /// How the connection authenticates.
    pub auth: Auth,
    /// `?device_id=`, validated.
    pub device_id: Option<String>,
    /// `?channel=` (repeatable), checked after authentication.
    pub channels: Vec<String>,
    /// `?device_name=`: a label for the device list (at most 64 characters).
    pub device_name: Option<String>,
    /// `?since=N`: replay the (durable) user channel after `seq` N.
    pub since: Option<u64>,
    /// The client's address (from the PROXY header when one is expected), for the logs.
    pub peer: SocketAddr,
}

/// How a connection authenticates.
pub enum Auth {
    /// The token came with the request and was admitted.
    Token(Identity, UserSlot),
    /// `{"type":"auth","token":…}` as the first frame.
    FirstFrame,
    /// `?auth=key`: the server sends a signed challenge and the device answers with its key.
    Key,
}

/// Why verified claims do not open a connection or call an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The token is bound to another device than the one requested (403 / 4001).
    OtherDevice,
    /// The device was revoked (403 at the upgrade, 401 on REST, 4003 with first-frame auth).
    Revoked,
    /// Issued before the user's last password change or reset (401 / 4001).
    OldGeneration,
    /// A token alone for a device that registered a public key: it connects with key login only
    /// (403 / 4001), unless `SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN=1`.
    KeyRequired,
}

impl Refused {
    /// The HTTP refusal at the WebSocket upgrade.
    pub fn at_upgrade(self) -> HttpError {
        match self {
            Refused::OtherDevice => HttpError::Forbidden("token is bound to another device"),
            Refused::Revoked => HttpError::Forbidden("device revoked"),
            Refused::OldGeneration => HttpError::Unauthorized(AuthError::Invalid),
            Refused::KeyRequired => {
                HttpError::Forbidden("this device has a registered key: connect with key login (auth=key)")
            }
        }
    }
}

/// Whether verified claims are still honoured here: not issued before the user's last password
/// change or reset, and not for a revoked device.
pub fn still_valid(state: &AppState, claims: &crate::auth::Claims) -> Result<(), Refused> {
    if !state.registry.gen_current(&claims.user_id, claims.gen) {
        return Err(Refused::OldGeneration);
    }
    if claims.device_id.as_deref().is_some_and(|d| state.registry.is_revoked(&claims.user_id, d)) {
        return Err(Refused::Revoked);
    }
    Ok(())
}

/// Combines verified claims with the requested device into an identity.
pub fn identity(claims: crate::auth::Claims, requested_device: Option<&str>) -> Result<Identity, Refused> {
    let device = match (claims.device_id, requested_device) {
        // A token bound to a device only opens that device.
        (Some(bound), Some(req)) if bound != req => return Err(Refused::OtherDevice),
        (Some(bound), _) if !valid_device_id(&bound) => return Err(Refused::OtherDevice),
        (Some(bound), _) => bound,
        (None, Some(req)) => req.to_string(),
        (None, None) => format!("d-{}", crate::util::random_hex(6)),
    };
    Ok(Identity {
        user_id: Arc::from(claims.user_id),
        device_id: Arc::from(device),
        rights: Arc::new(crate::identity::Rights {
            channels: claims.channels,
            subscribe: claims.subscribe,
            publish: claims.publish,
        }),
        exp: claims.exp,
        gen: claims.gen,
    })
}

/// Why verified claims do not open a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    Refused(Refused),
    /// The user is at `SYNCGATE_MAX_CONNECTIONS_PER_USER` here or in the cluster (429 / 4009).
    OverCap,
}

impl NotAdmitted {
    /// The HTTP refusal at the WebSocket upgrade.
    pub fn at_upgrade(self) -> HttpError {
        match self {
            NotAdmitted::Refused(r) => r.at_upgrade(),
            NotAdmitted::OverCap => HttpError::TooManyConnections,
        }
    }
}

/// The one admission rule for verified claims, with the token in the request or in the first
/// frame: not void (token generation, revoked device), bound to the requested device, not a
/// device that must use key login (no downgrade), then [`admit_identity`].
pub async fn admit_claims(
    state: &AppState,
    claims: crate::auth::Claims,
    requested_device: Option<&str>,
) -> Result<(Identity, UserSlot), NotAdmitted> {
    still_valid(state, &claims).map_err(NotAdmitted::Refused)?;
    let id = identity(claims, requested_device).map_err(NotAdmitted::Refused)?;
    if !state.config.auth.keyed_devices_allow_token && state.registry.is_keyed(&id.user_id, &id.device_id) {
        return Err(NotAdmitted::Refused(Refused::KeyRequired));
    }
    admit_identity(state, id).await
}

/// Admits an authenticated identity (token or key login): a device that is not revoked, and one
/// of the user's connection slots here and in the cluster (the slot is released when the
/// returned guard drops).
pub async fn admit_identity(state: &AppState, id: Identity) -> Result<(Identity, UserSlot), NotAdmitted> {
    // A revoked device can never simply reconnect.
    if state.registry.is_revoked(&id.user_id, &id.device_id) {
        return Err(NotAdmitted::Refused(Refused::Revoked));
    }
    let max = state.config.limits.max_connections_per_user;
    let mut slot = state.registry.acquire_slot(&id.user_id, max).ok_or(NotAdmitted::OverCap)?;
    // Cluster-wide cap (the Redis bus counts every instance's connections).
    if !state.bus.acquire_user(&id.user_id, max).await {
        return Err(NotAdmitted::OverCap);
    }
    slot.mark_cluster();
    Ok((id, slot))
}

/// What every WebSocket upgrade passes (`/ws` and the echo endpoint): not shutting down, a place
/// under `SYNCGATE_MAX_CONNECTIONS` (load shedding: 503; open ones are untouched), and the
/// per-IP connect rate.
pub fn admission(state: &AppState, peer: SocketAddr) -> Result<AdmitGuard, HttpError> {
    if *state.shutdown.borrow() {
        return Err(HttpError::Unavailable);
    }
    let place =
        AdmitGuard::try_new(&state.admitted, state.config.limits.max_connections).ok_or(HttpError::Overloaded)?;
    if let Some(limiter) = &state.ip_limiter {
        if !limiter.allow(peer.ip(), Instant::now()) {
            return Err(HttpError::RateLimited);
        }
    }
    Ok(place.for_address(&state.addresses, peer.ip()))
}

pub async fn admit<B>(state: &AppState, peer: SocketAddr, req: &Request<B>) -> Result<Admitted, HttpError> {
    if *state.shutdown.borrow() {
        return Err(HttpError::Unavailable);
    }
    if !state.config.listener.allowed_origins.is_empty() {
        if let Some(origin) = req.headers().get(http::header::ORIGIN) {
            let ok = origin.to_str().map(|o| state.config.origin_allowed(o)).unwrap_or(false);
            if !ok {
                return Err(HttpError::Forbidden("origin not allowed"));
            }
        }
    }
    let place = admission(state, peer)?;

    let mut token = None;
    let mut device_id = None;
    let mut channels = Vec::new();
    let mut device_name = None;
    let mut since = None;
    let mut key_login = false;
    for (k, v) in crate::util::query_pairs(req.uri().query().unwrap_or("")) {
        match k.as_str() {
            "token" if token.is_none() => token = Some(v),
            "auth" => match v.as_str() {
                "key" => key_login = true,
                _ => return Err(HttpError::BadRequest("auth must be `key` (or absent)".into())),
            },
            "device_id" => {
                if !valid_device_id(&v) {
                    return Err(HttpError::BadRequest(crate::identity::DEVICE_ID_RULE.into()));
                }
                device_id = Some(v);
            }
            "device_name" => {
                if v.chars().count() > 64 || v.chars().any(char::is_control) {
                    return Err(HttpError::BadRequest("device_name must be at most 64 printable characters".into()));
                }
                device_name = Some(v);
            }
            "since" => {
                since = Some(
                    v.parse::<u64>()
                        .map_err(|_| HttpError::BadRequest("since must be a non-negative integer (a seq)".into()))?,
                );
            }
            "channel" => {
                if channels.len() >= state.config.limits.max_channels_per_connection as usize {
                    return Err(HttpError::BadRequest("too many channels".into()));
                }
                channels.push(v);
            }
            _ => {}
        }
    }
    if key_login {
        // Key login takes no token: one way to authenticate per connection.
        if token.is_some() || !matches!(crate::util::bearer(req.headers()), crate::util::Bearer::Missing) {
            return Err(HttpError::BadRequest("auth=key takes no token".into()));
        }
    } else if token.is_none() {
        match crate::util::bearer(req.headers()) {
            crate::util::Bearer::Missing => {}
            crate::util::Bearer::Token(t) => token = Some(t.to_string()),
            crate::util::Bearer::Malformed => return Err(HttpError::Unauthorized(AuthError::Invalid)),
        }
    }
    let auth = match token {
        None if key_login => Auth::Key,
        None => Auth::FirstFrame,
        Some(t) => {
            let claims = state.verifier.verify(&t).await.map_err(HttpError::Unauthorized)?;
            let (id, slot) =
                admit_claims(state, claims, device_id.as_deref()).await.map_err(NotAdmitted::at_upgrade)?;
            Auth::Token(id, slot)
        }
    };
    Ok(Admitted { _place: place, auth, device_id, channels, device_name, since, peer })
}
