-- Pairing codes: a signed-in device shows a short code, a new device claims it once. Stored as
-- HMAC-SHA256 hashes keyed from the server's token secret (never the code itself, and a leaked
-- table cannot be brute-forced offline). One live code per (user, device): a new code replaces
-- the earlier one. `token_gen` is the user's token generation when the code was made: a password
-- change voids it. Claimed rows are deleted; expired ones are deleted when a new code is made.
CREATE TABLE pairing_codes (
    code_hash  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL,
    token_gen  INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX pairing_codes_device ON pairing_codes (user_id, device_id);
CREATE INDEX pairing_codes_expires ON pairing_codes (expires_at);
