-- Find the user a sign-in belongs to, or create it: one step, so two concurrent first sign-ins of one person
-- make one user. Prepended with store_time.lua.
--
-- KEYS[1]  {prefix}signin_logins   HASH  "{method}:{subject}" -> user id
-- KEYS[2]  {prefix}users           ZSET  id -> created_at
-- KEYS[3]  {prefix}user_tokens     HASH  token hash -> id
-- ARGV[1]  login: "{method}:{subject}"
-- ARGV[2]  prefix (the user's hash is {prefix}user:{id}, chosen here)
-- ARGV[3]  a new user id, used if the login has no user yet
-- ARGV[4]  the new user's token hash (a token nobody is shown: it signs in, an admin may rotate it)
-- ARGV[5..] field, value pairs of a new user's hash
--
-- Returns {user id, session generation, 1 if created now else 0}, or {"", 0, 0} when the new id or token
-- hash is taken already (drawn again by the caller).

local known = redis.call('HGET', KEYS[1], ARGV[1])
if known then
  local user = ARGV[2] .. 'user:' .. known
  local u = redis.call('HMGET', user, 'id', 'session_gen')
  if u[1] then return {known, tonumber(u[2]) or 0, 0} end  -- else deleted since: made again below
end
local user = ARGV[2] .. 'user:' .. ARGV[3]
if redis.call('EXISTS', user) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then return {'', 0, 0} end
local now = store_now()
redis.call('HSET', user, 'id', ARGV[3], 'token_hash', ARGV[4], 'created_at', now, 'last_used_at', 0)
for i = 5, #ARGV, 2 do redis.call('HSET', user, ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {ARGV[3], 0, 1}
