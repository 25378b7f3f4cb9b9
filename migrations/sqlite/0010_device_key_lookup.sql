-- Key login finds a device by its id (and registered key) without knowing the user.
CREATE INDEX devices_device_id ON devices (device_id);
-- A public key belongs to one device, ever (a revoked device keeps its key).
CREATE UNIQUE INDEX devices_public_key ON devices (public_key) WHERE public_key IS NOT NULL;
