-- Removes a dead instance's connection slots of one user. KEYS: uc, ui (the user's).
-- ARGV: instance. Returns the user's connections left in the cluster (0: now offline), or -1
-- when the instance held none.
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('HDEL', KEYS[2], ARGV[1])
if mine <= 0 then return -1 end
local left = redis.call('DECRBY', KEYS[1], mine)
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
