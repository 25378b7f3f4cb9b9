-- Takes a cluster-wide connection slot for a user unless the user is at the cap. Both keys are
-- the user's (hash tag `{user}`): KEYS: uc (connections in the cluster), ui (instance ->
-- connections). ARGV: instance, max.
-- Returns {the user's connections in the cluster with this one (1: the user just came online),
-- this instance's}, or {0, 0} at the cap (nothing counted).
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then return {0, 0} end
local mine = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {redis.call('INCR', KEYS[1]), mine}
