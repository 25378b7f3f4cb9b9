-- Removes a dead instance's presence from one channel (its keys only, like presence.lua).
-- KEYS: pc, pm, pi, pn of the channel. ARGV: instance, transitions ('1': keep pm and report).
-- Returns flat pairs: a `user\x1fdevice` that left the cluster with the instance and its
-- presence.lua flags (2 vacated, 8 member removed) as a string.
local pc, pm, pi, pn = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local pre = ARGV[1] .. '\31'; local tr = ARGV[2] == '1'
local out = {}
local all = redis.call('HGETALL', pi)
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, #pre) == pre then
    local ud = string.sub(f, #pre + 1)
    redis.call('HDEL', pi, f)
    local left = redis.call('HINCRBY', pc, ud, -tonumber(all[i + 1]))
    if left <= 0 then
      redis.call('HDEL', pc, ud)
      local flags = 0
      if tr then
        if redis.call('EXISTS', pc) == 0 then flags = flags + 2 end
        local user = string.sub(ud, 1, string.find(ud, '\31', 1, true) - 1)
        local n = redis.call('HINCRBY', pm, user, -1)
        if n <= 0 then
          redis.call('HDEL', pm, user)
          if n == 0 then flags = flags + 8 end
        end
      end
      table.insert(out, ud)
      table.insert(out, tostring(flags))
    end
  end
end
redis.call('HDEL', pn, ARGV[1])
return out
