-- Takes a cluster-wide connection slot for a user unless the user is at the cap.
-- ARGV: prefix, instance, user, max. Returns the user's connections in the cluster with this
-- one (1: the user just came online), or 0 (at the cap, nothing counted).
local p = ARGV[1]
local n = tonumber(redis.call('HGET', p .. 'uc', ARGV[3]) or '0')
if n >= tonumber(ARGV[4]) then return 0 end
redis.call('HINCRBY', p .. 'inst:' .. ARGV[2] .. ':users', ARGV[3], 1)
return redis.call('HINCRBY', p .. 'uc', ARGV[3], 1)
