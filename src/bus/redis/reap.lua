-- Removes a dead instance's contributions (presence, user slots, connection count) at once.
-- ARGV: prefix, instance, transitions ('1': webhooks run; keep `pm:<channel>` like
-- presence.lua). Returns {leaves, offline}: leaves is flat pairs of a
-- `channel\x1fuser\x1fdevice` that left the cluster and its presence.lua flags (as a string);
-- offline the users left with no connection anywhere. Empty when another instance reaped it
-- first.
local p = ARGV[1]; local inst = ARGV[2]; local tr = ARGV[3] == '1'
if redis.call('ZREM', p .. 'instances', inst) == 0 then return {{}, {}} end
local leaves = {}
local pres = redis.call('HGETALL', p .. 'inst:' .. inst .. ':pres')
for i = 1, #pres, 2 do
  local field = pres[i]
  local sep = string.find(field, '\31', 1, true)
  local ch = string.sub(field, 1, sep - 1)
  local ud = string.sub(field, sep + 1)
  local pc = p .. 'pc:' .. ch
  local left = redis.call('HINCRBY', pc, ud, -tonumber(pres[i + 1]))
  if left <= 0 then
    redis.call('HDEL', pc, ud)
    local flags = 0
    if tr and string.sub(ch, 1, 5) ~= 'user:' then
      if redis.call('EXISTS', pc) == 0 then flags = flags + 2 end
      local user = string.sub(ud, 1, string.find(ud, '\31', 1, true) - 1)
      local pm = p .. 'pm:' .. ch
      local n = redis.call('HINCRBY', pm, user, -1)
      if n <= 0 then
        redis.call('HDEL', pm, user)
        if n == 0 then flags = flags + 8 end
      end
    end
    table.insert(leaves, field)
    table.insert(leaves, tostring(flags))
  end
end
local offline = {}
local users = redis.call('HGETALL', p .. 'inst:' .. inst .. ':users')
for i = 1, #users, 2 do
  local n = redis.call('HINCRBY', p .. 'uc', users[i], -tonumber(users[i + 1]))
  if n <= 0 then
    redis.call('HDEL', p .. 'uc', users[i])
    if n == 0 then table.insert(offline, users[i]) end
  end
end
redis.call('DEL', p .. 'inst:' .. inst .. ':pres', p .. 'inst:' .. inst .. ':users')
redis.call('HDEL', p .. 'conns', inst)
return {leaves, offline}
