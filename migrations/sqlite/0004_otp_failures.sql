-- Wrong reset codes per account (a rolling 24 h budget that issuing a new code does not reset).
CREATE TABLE otp_failures (
    user_id TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX otp_failures_user_at ON otp_failures (user_id, at);
