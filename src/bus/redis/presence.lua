-- One presence change of a user+device in a channel on one instance.
-- ARGV: prefix, instance, channel, user, device, delta (1 joined, -1 left).
-- Keeps the instance's own record (`inst:<id>:pres`, for reaping) and the cluster count
-- (`pc:<channel>`); returns the user+device's cluster-wide count after the change.
local p = ARGV[1]; local ud = ARGV[4] .. '\31' .. ARGV[5]; local d = tonumber(ARGV[6])
local mine_key = p .. 'inst:' .. ARGV[2] .. ':pres'; local f = ARGV[3] .. '\31' .. ud
if redis.call('HINCRBY', mine_key, f, d) <= 0 then redis.call('HDEL', mine_key, f) end
local pc = p .. 'pc:' .. ARGV[3]
local total = redis.call('HINCRBY', pc, ud, d)
if total <= 0 then redis.call('HDEL', pc, ud) end
return total
