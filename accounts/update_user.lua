-- Change fields of an existing user; a user deleted meanwhile is not brought back. Prepended with store_time.lua.
--
-- KEYS[1]  {prefix}user:{id}        HASH
-- KEYS[2]  {prefix}public_users     SET
-- ARGV[1]  user id
-- ARGV[2]  "1": now public, "0": now private, "": unchanged
-- ARGV[3]  a field to set to the store's clock (ms), or "" for none (disable sets disabled_at)
-- ARGV[4]  n, the number of fields to delete, which follow
-- ARGV[5 .. 4+n]  fields to delete
-- ARGV[5+n ..]    field, value pairs to set
--
-- Returns 1, or 0 when there is no such user.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[4])
for i = 5, 4 + n do redis.call('HDEL', KEYS[1], ARGV[i]) end
for i = 5 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[3], store_now()) end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'public', '1')
  redis.call('SADD', KEYS[2], ARGV[1])
elseif ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], 'public')
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
