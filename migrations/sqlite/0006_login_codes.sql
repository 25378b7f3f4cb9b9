-- One-time codes of the login page (RFC 8252 / PKCE): stored as SHA-256 hashes, redeemed once
-- by any instance. `family` is the refresh-token family a redemption issues (revoked if the
-- code is presented again).
CREATE TABLE login_codes (
    code_hash      TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id      TEXT,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    family         TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,
    used           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX login_codes_expires ON login_codes (expires_at);
