-- Delete a user and everything kept about it: token index entry, addresses, limiter state, ban.
--
-- KEYS[1]  {prefix}user:{id}        HASH
-- KEYS[2]  {prefix}user:{id}:ips    ZSET
-- KEYS[3]  {prefix}users            ZSET
-- KEYS[4]  {prefix}user_tokens      HASH
-- KEYS[5]  {prefix}public_users     SET
-- KEYS[6]  {prefix}bans             HASH
-- KEYS[7..11]  {prefix}limit:user:{id}:min, :hour, :block, :strikes, :image
-- ARGV[1]  user id
-- ARGV[2]  the user's identity, "user:{id}"
--
-- Returns 1, or 0 when there was no such user.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local token = redis.call('HGET', KEYS[1], 'token_hash')
if token and redis.call('HGET', KEYS[4], token) == ARGV[1] then redis.call('HDEL', KEYS[4], token) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[2])
return 1
