-- Create one user: its hash, its place in the user list, its token's index entry. Prepended with store_time.lua.
--
-- KEYS[1]  {prefix}user:{id}        HASH
-- KEYS[2]  {prefix}users            ZSET  id -> created_at
-- KEYS[3]  {prefix}user_tokens      HASH  token hash -> id
-- KEYS[4]  {prefix}public_users     SET
-- ARGV[1]  user id
-- ARGV[2]  token hash (sha256 hex)
-- ARGV[3]  "1" when the user is public
-- ARGV[4..] field, value pairs of the user hash
--
-- Returns created_at (ms, store clock), or 0 when the id or the token hash is taken already.

if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 0 end
local now = store_now()
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'token_hash', ARGV[2], 'created_at', now, 'last_used_at', 0)
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('SADD', KEYS[4], ARGV[1]) end
return now
