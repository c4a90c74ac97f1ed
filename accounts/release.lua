-- Hand back a reservation a request did not spend (it failed, or was refused before upstream
-- counted anything): the user's counted tokens drop by it, never below zero. A user deleted
-- meanwhile is not brought back as a stray hash.
--
-- The request's cost reservation against the monthly budget, if it made one, goes too.
--
-- KEYS[1]  the user's hash                  ({prefix}user:{id})
-- KEYS[2]  the user's cost reservations     ({prefix}user:{id}:holds)
-- ARGV[1]  the field                        (used:{family})
-- ARGV[2]  tokens reserved
-- ARGV[3]  the cost reservation's member ("" for none)

if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if left < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0) end
return 1
