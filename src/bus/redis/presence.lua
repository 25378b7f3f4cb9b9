-- One presence change of a user+device in a channel on one instance.
-- ARGV: prefix, instance, channel, user, device, delta (1 joined, -1 left), transitions ('1':
-- webhooks run and this is not a user channel).
-- Keeps the instance's own record (`inst:<id>:pres`, for reaping) and the cluster count
-- (`pc:<channel>`: user+device -> connections); with transitions also the users present
-- (`pm:<channel>`: user -> devices present). Returns {the user+device's cluster-wide count
-- after the change, flags}: 1 channel occupied, 2 channel vacated, 4 member added, 8 member
-- removed. The script is atomic, so each transition is seen by exactly one caller.
local p = ARGV[1]; local user = ARGV[4]; local ud = user .. '\31' .. ARGV[5]; local d = tonumber(ARGV[6])
local mine_key = p .. 'inst:' .. ARGV[2] .. ':pres'; local f = ARGV[3] .. '\31' .. ud
if redis.call('HINCRBY', mine_key, f, d) <= 0 then redis.call('HDEL', mine_key, f) end
local pc = p .. 'pc:' .. ARGV[3]
local total = redis.call('HINCRBY', pc, ud, d)
if total <= 0 then redis.call('HDEL', pc, ud) end
local flags = 0
if ARGV[7] == '1' then
  local pm = p .. 'pm:' .. ARGV[3]
  if d > 0 and total == 1 then
    if redis.call('HLEN', pc) == 1 then flags = flags + 1 end
    if redis.call('HINCRBY', pm, user, 1) == 1 then flags = flags + 4 end
  elseif d < 0 and total == 0 then
    if redis.call('EXISTS', pc) == 0 then flags = flags + 2 end
    local n = redis.call('HINCRBY', pm, user, -1)
    if n <= 0 then
      redis.call('HDEL', pm, user)
      if n == 0 then flags = flags + 8 end
    end
  end
end
return {total, flags}
