-- A device's Ed25519 public key (32 raw bytes, base64url without padding), registered once by the
-- device itself; it cannot be replaced (a lost key means revoking the device and pairing again).
ALTER TABLE devices ADD COLUMN public_key TEXT;
