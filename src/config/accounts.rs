//! Accounts and their tokens: access/refresh/login-code lifetimes, password hashing, attempt
//! limits, registrations, reset codes (OTP) and their SMTP delivery, login-page redirects, devices,
//! pairing codes.

use super::mask_url;
use super::reader::Reader;

/// Access token lifetime.
pub const ACCESS_TTL_SECS: &str = "SYNCGATE_ACCESS_TTL_SECS";
/// Refresh token lifetime.
pub const REFRESH_TTL_SECS: &str = "SYNCGATE_REFRESH_TTL_SECS";
/// How long a login page code can be redeemed.
pub const LOGIN_CODE_TTL_SECS: &str = "SYNCGATE_LOGIN_CODE_TTL_SECS";
/// Unrevoked devices per account.
pub const MAX_DEVICES_PER_USER: &str = "SYNCGATE_MAX_DEVICES_PER_USER";
/// Password hashes computed at once.
pub const HASH_CONCURRENCY: &str = "SYNCGATE_HASH_CONCURRENCY";
/// Login/forgot/reset attempts per (address, account) per minute.
pub const AUTH_ATTEMPTS_PER_MIN: &str = "SYNCGATE_AUTH_ATTEMPTS_PER_MIN";
/// Login/forgot/reset attempts per address (any account) per minute.
pub const AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN: &str = "SYNCGATE_AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN";
/// Login/forgot/reset attempts per account (any address) per hour.
pub const AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR: &str = "SYNCGATE_AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR";
/// Registrations per client address per hour.
pub const REGISTER_PER_HOUR: &str = "SYNCGATE_REGISTER_PER_HOUR";
/// Wrong reset codes per account per rolling 24 h.
pub const OTP_GUESSES_PER_DAY: &str = "SYNCGATE_OTP_GUESSES_PER_DAY";
/// `smtp://` or `smtps://` URL delivering reset codes.
pub const SMTP_URL: &str = "SYNCGATE_SMTP_URL";
/// Sender of those mails.
pub const SMTP_FROM: &str = "SYNCGATE_SMTP_FROM";
/// Non-loopback redirect URIs the login page accepts (comma list).
pub const REDIRECT_ALLOWLIST: &str = "SYNCGATE_REDIRECT_ALLOWLIST";
/// How long a pairing code can be claimed.
pub const PAIRING_TTL_SECS: &str = "SYNCGATE_PAIRING_TTL_SECS";
/// Pairing-code claims per client address per minute.
pub const PAIRING_CLAIMS_PER_MIN: &str = "SYNCGATE_PAIRING_CLAIMS_PER_MIN";
/// Pairing-code claims per minute from all addresses together (cluster-wide with Redis).
pub const PAIRING_CLAIMS_GLOBAL_PER_MIN: &str = "SYNCGATE_PAIRING_CLAIMS_GLOBAL_PER_MIN";

/// Accounts, tokens and the limits around logging in.
#[derive(Clone)]
pub struct AccountsConfig {
    /// Access token lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Refresh token lifetime, seconds.
    pub refresh_ttl_secs: u64,
    /// How long a login page's one-time code can be redeemed.
    pub login_code_ttl_secs: u64,
    /// Unrevoked devices per account; a login that would create one more gets 409.
    pub max_devices_per_user: u32,
    /// Password hashes computed at once on the blocking pool.
    pub hash_concurrency: usize,
    /// Login/forgot/reset attempts per (address, account) per minute.
    pub auth_attempts_per_min: u32,
    /// Login/forgot/reset attempts per address (any account) per minute.
    pub auth_attempts_per_address_per_min: u32,
    /// Login/forgot/reset attempts per account (any address) per hour.
    pub auth_attempts_per_account_per_hour: u32,
    /// Registrations per IP per hour.
    pub register_per_hour: u32,
    /// Wrong reset codes per account per rolling 24 h, across every code issued.
    pub otp_guesses_per_day: u32,
    /// SMTP for reset codes; without it codes are only logged in the development set-up.
    pub smtp_url: Option<String>,
    /// Sender of the reset-code mails.
    pub smtp_from: String,
    /// Non-loopback redirect URIs the login page may redirect to with a code (exact, query ignored).
    pub redirect_allowlist: Vec<String>,
    /// How long a pairing code (`POST /api/pairing`) can be claimed, seconds.
    pub pairing_ttl_secs: u64,
    /// Claims (`POST /api/pairing/claim`) per client address (IPv6 by its /64) per minute.
    pub pairing_claims_per_min: u32,
    /// Claims per minute from every address together; counted in Redis across the cluster when
    /// `REDIS_URL` is set (in memory per instance otherwise, or while Redis is unreachable).
    pub pairing_claims_global_per_min: u32,
}

impl AccountsConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let access_ttl_secs = r.ranged(ACCESS_TTL_SECS, 900, 10, 86_400);
        let refresh_ttl_secs = r.ranged(REFRESH_TTL_SECS, 30 * 86_400, 60, 365 * 86_400);
        let login_code_ttl_secs = r.ranged(LOGIN_CODE_TTL_SECS, 60, 1, 600);
        let max_devices_per_user = r.ranged(MAX_DEVICES_PER_USER, 100, 1, 1_000_000) as u32;
        let hash_concurrency = r.ranged(HASH_CONCURRENCY, 2, 1, 256) as usize;
        let auth_attempts_per_min = r.ranged(AUTH_ATTEMPTS_PER_MIN, 10, 1, 1_000_000) as u32;
        let auth_attempts_per_address_per_min = r.ranged(AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN, 60, 1, 1_000_000) as u32;
        let auth_attempts_per_account_per_hour =
            r.ranged(AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR, 300, 2, 100_000_000) as u32;
        let register_per_hour = r.ranged(REGISTER_PER_HOUR, 30, 1, 1_000_000) as u32;
        let otp_guesses_per_day = r.ranged(OTP_GUESSES_PER_DAY, 20, 1, 1000) as u32;
        let smtp_url = r.raw(SMTP_URL).map(str::to_string);
        if smtp_url.as_ref().is_some_and(|u| !(u.starts_with("smtp://") || u.starts_with("smtps://"))) {
            r.error(format!("{SMTP_URL} must be an smtp:// or smtps:// URL"));
        }
        let smtp_from = r.raw(SMTP_FROM).unwrap_or("syncgate <no-reply@localhost>").to_string();
        let redirect_allowlist = r.list(REDIRECT_ALLOWLIST);
        for u in &redirect_allowlist {
            if !u.starts_with("https://") && !u.starts_with("http://") || u.contains('#') || u.contains('?') {
                r.error(format!("{REDIRECT_ALLOWLIST}: {u:?} must be an http(s) URL without query or fragment"));
            }
        }
        let pairing_ttl_secs = r.ranged(PAIRING_TTL_SECS, 600, 1, 3600);
        let pairing_claims_per_min = r.ranged(PAIRING_CLAIMS_PER_MIN, 10, 1, 1_000_000) as u32;
        let pairing_claims_global_per_min = r.ranged(PAIRING_CLAIMS_GLOBAL_PER_MIN, 600, 1, 100_000_000) as u32;
        AccountsConfig {
            access_ttl_secs,
            refresh_ttl_secs,
            login_code_ttl_secs,
            max_devices_per_user,
            hash_concurrency,
            auth_attempts_per_min,
            auth_attempts_per_address_per_min,
            auth_attempts_per_account_per_hour,
            register_per_hour,
            otp_guesses_per_day,
            smtp_url,
            smtp_from,
            redirect_allowlist,
            pairing_ttl_secs,
            pairing_claims_per_min,
            pairing_claims_global_per_min,
        }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (ACCESS_TTL_SECS, self.access_ttl_secs.to_string()),
            (REFRESH_TTL_SECS, self.refresh_ttl_secs.to_string()),
            (LOGIN_CODE_TTL_SECS, self.login_code_ttl_secs.to_string()),
            (MAX_DEVICES_PER_USER, self.max_devices_per_user.to_string()),
            (HASH_CONCURRENCY, self.hash_concurrency.to_string()),
            (AUTH_ATTEMPTS_PER_MIN, self.auth_attempts_per_min.to_string()),
            (AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN, self.auth_attempts_per_address_per_min.to_string()),
            (AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR, self.auth_attempts_per_account_per_hour.to_string()),
            (REGISTER_PER_HOUR, self.register_per_hour.to_string()),
            (OTP_GUESSES_PER_DAY, self.otp_guesses_per_day.to_string()),
            (SMTP_URL, self.smtp_url.as_deref().map(mask_url).unwrap_or_else(|| "(unset)".into())),
            (SMTP_FROM, self.smtp_from.clone()),
            (REDIRECT_ALLOWLIST, self.redirect_allowlist.join(",")),
            (PAIRING_TTL_SECS, self.pairing_ttl_secs.to_string()),
            (PAIRING_CLAIMS_PER_MIN, self.pairing_claims_per_min.to_string()),
            (PAIRING_CLAIMS_GLOBAL_PER_MIN, self.pairing_claims_global_per_min.to_string()),
        ]);
    }
}
