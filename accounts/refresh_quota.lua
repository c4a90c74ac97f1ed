-- Refresh one user's quotas: each used:{family} goes down by refresh:{family}, or back to 0 without one.
-- In one step, so tokens that admission reserves meanwhile are never lost from the count.
--
-- KEYS[1]  {prefix}user:{id}        HASH
--
-- Returns 1, or 0 when there is no such user.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fields = redis.call('HGETALL', KEYS[1])
local values = {}
for i = 1, #fields, 2 do values[fields[i]] = fields[i + 1] end
for name, used in pairs(values) do
  if string.sub(name, 1, 5) == 'used:' then
    local amount = values['refresh:' .. string.sub(name, 6)]
    local left = 0
    if amount then left = math.max(0, tonumber(used) - tonumber(amount)) end
    redis.call('HSET', KEYS[1], name, left)
  end
end
return 1
