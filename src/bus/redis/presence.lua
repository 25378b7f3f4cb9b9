-- One presence change of a user+device in a channel on one instance. Every key is the
-- channel's (hash tag `{channel}`), so the script runs on one Redis Cluster slot:
-- KEYS: pc (user+device -> connections, cluster-wide), pm (user -> devices present; kept with
-- transitions), pi (instance+user+device -> connections: what each instance holds, for
-- reaping), pn (instance -> user+devices it holds here).
-- ARGV: instance, user, device, delta (1 joined, -1 left), transitions ('1': webhooks run and
-- this is not a user channel).
-- Returns {the user+device's cluster-wide count after the change, flags}: 1 channel occupied,
-- 2 channel vacated, 4 member added, 8 member removed, 16 this instance's first presence in the
-- channel, 32 its last. The script is atomic: each transition is seen by exactly one caller.
local pc, pm, pi, pn = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local inst = ARGV[1]; local user = ARGV[2]; local ud = user .. '\31' .. ARGV[3]; local d = tonumber(ARGV[4])
local flags = 0
local f = inst .. '\31' .. ud
local mine = redis.call('HINCRBY', pi, f, d)
if mine <= 0 then redis.call('HDEL', pi, f) end
if d > 0 and mine == 1 then
  if redis.call('HINCRBY', pn, inst, 1) == 1 then flags = flags + 16 end
elseif d < 0 and mine == 0 then
  local n = redis.call('HINCRBY', pn, inst, -1)
  if n <= 0 then
    redis.call('HDEL', pn, inst)
    if n == 0 then flags = flags + 32 end
  end
end
local total = redis.call('HINCRBY', pc, ud, d)
if total <= 0 then redis.call('HDEL', pc, ud) end
if ARGV[5] == '1' then
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
