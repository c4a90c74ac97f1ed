-- Enable a user and lift every limiter penalty on it: the ban, the running block, the strikes toward a ban
-- and the windows that would block it again at once (as `DELETE /admin/bans/{identity}` does).
--
-- KEYS[1]  {prefix}user:{id}                    HASH
-- KEYS[2]  {prefix}bans                         HASH  identity -> "{ms}|{reason}"
-- KEYS[3]  {prefix}limit:user:{id}:block        STR
-- KEYS[4]  {prefix}limit:user:{id}:strikes      STR
-- KEYS[5]  {prefix}limit:user:{id}:min          ZSET
-- KEYS[6]  {prefix}limit:user:{id}:hour         ZSET
-- KEYS[7]  {prefix}limit:user:{id}:image        ZSET
-- ARGV[1]  the user's identity, "user:{id}"
--
-- Returns 1, or 0 when there is no such user.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'disabled_at', 'disabled_reason')
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
return 1
