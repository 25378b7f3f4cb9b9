-- Durable quota: one hash per user and minute (`e` events, `b` bytes); counts only an event
-- that fits both limits. KEYS: the hash. ARGV: events_max, bytes_max, bytes. Returns 1
-- (counted) or 0.
local k = KEYS[1]; local n = tonumber(ARGV[3])
local cur = redis.call('HMGET', k, 'e', 'b')
local e = tonumber(cur[1] or '0'); local b = tonumber(cur[2] or '0')
if e + 1 > tonumber(ARGV[1]) or b + n > tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', k, 'e', 1)
redis.call('HINCRBY', k, 'b', n)
redis.call('EXPIRE', k, 120)
return 1
