-- Durable streams: events with a per-channel seq, each channel's head, devices' read positions.
CREATE TABLE events (
    channel       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    event         TEXT NOT NULL,
    data          TEXT NOT NULL,
    sender_user   TEXT,
    sender_device TEXT,
    msg_id        TEXT,
    ts            BIGINT NOT NULL,
    PRIMARY KEY (channel, seq)
);
-- Idempotency: one msg_id per sending device and channel (msg_id first: the batch lookup is by msg_id).
CREATE UNIQUE INDEX events_msg_id ON events (msg_id, channel, sender_user, sender_device) WHERE msg_id IS NOT NULL;
CREATE INDEX events_ts ON events (ts);

-- The latest seq of every durable channel (member_a and member_b: the two users of a dm channel).
CREATE TABLE channel_heads (
    channel    TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    member_a   TEXT,
    member_b   TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX channel_heads_a ON channel_heads (member_a);
CREATE INDEX channel_heads_b ON channel_heads (member_b);

-- How far each device has read each durable channel.
CREATE TABLE read_positions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    channel    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, channel)
);
CREATE INDEX read_positions_channel ON read_positions (user_id, channel);
