-- One-time codes for password resets: hashed, expiring, with an attempt counter.
CREATE TABLE otps (
    user_id    TEXT PRIMARY KEY,
    salt       TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);
