-- Hand back a reservation a request did not spend (it failed, or was refused before upstream
-- counted anything): the user's counted tokens drop by it, never below zero. A user deleted
-- meanwhile is not brought back as a stray hash.
--
-- KEYS[1]  the user's hash                  ({prefix}user:{id})
-- ARGV[1]  the field                        (used:{family})
-- ARGV[2]  tokens reserved

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if left < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0) end
return 1
