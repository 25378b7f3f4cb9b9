-- Per-user token generation: every access and refresh token carries the generation it was issued
-- in; a password change or reset bumps it, and older tokens stop working everywhere.
ALTER TABLE users ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0;
-- Usernames are unique regardless of case ("Alice" and "alice" are one name).
CREATE UNIQUE INDEX users_username_ci ON users (lower(username));
