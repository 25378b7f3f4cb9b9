-- Removes a dead instance's contributions (presence, user slots, connection count) at once.
-- ARGV: prefix, instance. Returns the `channel\x1fuser\x1fdevice` entries that left the
-- cluster (empty when another instance reaped it first).
local p = ARGV[1]; local inst = ARGV[2]
if redis.call('ZREM', p .. 'instances', inst) == 0 then return {} end
local leaves = {}
local pres = redis.call('HGETALL', p .. 'inst:' .. inst .. ':pres')
for i = 1, #pres, 2 do
  local field = pres[i]
  local sep = string.find(field, '\31', 1, true)
  local ch = string.sub(field, 1, sep - 1)
  local ud = string.sub(field, sep + 1)
  local left = redis.call('HINCRBY', p .. 'pc:' .. ch, ud, -tonumber(pres[i + 1]))
  if left <= 0 then redis.call('HDEL', p .. 'pc:' .. ch, ud); table.insert(leaves, field) end
end
local users = redis.call('HGETALL', p .. 'inst:' .. inst .. ':users')
for i = 1, #users, 2 do
  if redis.call('HINCRBY', p .. 'uc', users[i], -tonumber(users[i + 1])) <= 0 then
    redis.call('HDEL', p .. 'uc', users[i])
  end
end
redis.call('DEL', p .. 'inst:' .. inst .. ':pres', p .. 'inst:' .. inst .. ':users')
redis.call('HDEL', p .. 'conns', inst)
return leaves
