-- Key login finds a device by its id (and registered key) without knowing the user.
CREATE INDEX devices_device_id ON devices (device_id);
