-- Give a user a new token: the old one stops working in the same step.
--
-- KEYS[1]  {prefix}user:{id}        HASH
-- KEYS[2]  {prefix}user_tokens      HASH  token hash -> id
-- ARGV[1]  user id
-- ARGV[2]  the new token's hash
-- ARGV[3]  the new token's hint (last characters)
--
-- Returns 1, or 0 when there is no such user (or, never in practice, the new hash is taken).

if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
local old = redis.call('HGET', KEYS[1], 'token_hash')
if old and redis.call('HGET', KEYS[2], old) == ARGV[1] then redis.call('HDEL', KEYS[2], old) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'token_hash', ARGV[2], 'token_hint', ARGV[3])
return 1
