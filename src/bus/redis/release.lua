-- Releases a connection slot taken with acquire.lua. KEYS: uc, ui (the user's). ARGV: instance.
-- Returns {connections left in the cluster (0: the user just went offline; negative: the slot
-- was never counted, Redis was down then), this instance's}.
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', KEYS[1]) end
local mine = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
return {left, mine}
