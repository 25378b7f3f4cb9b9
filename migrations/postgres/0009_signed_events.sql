-- Signed events (SYNCGATE_SIGNED_NAMESPACES): the signature fields a recipient needs to verify a
-- stored event end to end — the nonce, the signer's sig_ts, the Ed25519 signature and the sending
-- device's public key (base64url without padding). NULL for unsigned events.
ALTER TABLE events ADD COLUMN nonce TEXT;
ALTER TABLE events ADD COLUMN sig_ts BIGINT;
ALTER TABLE events ADD COLUMN sig TEXT;
ALTER TABLE events ADD COLUMN sender_key TEXT;
