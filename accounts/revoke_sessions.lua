-- Revoke every session of one user: bump its session generation, which admit.lua compares with the
-- generation a session was made at. Only an existing user: a deleted one must not come back as a stub.
--
-- KEYS[1]  {prefix}user:{id}   HASH
--
-- Returns the new generation, or -1 when there is no such user.

if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'session_gen', 1)
