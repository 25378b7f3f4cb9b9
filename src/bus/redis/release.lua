-- Releases a connection slot taken with acquire.lua (cluster count and the instance's record).
-- ARGV: prefix, instance, user. Returns the user's connections left in the cluster (0: the
-- user just went offline; negative: the slot was never counted, Redis was down then).
local p = ARGV[1]
local left = redis.call('HINCRBY', p .. 'uc', ARGV[3], -1)
if left <= 0 then redis.call('HDEL', p .. 'uc', ARGV[3]) end
local k = p .. 'inst:' .. ARGV[2] .. ':users'
if redis.call('HINCRBY', k, ARGV[3], -1) <= 0 then redis.call('HDEL', k, ARGV[3]) end
return left
