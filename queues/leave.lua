-- Take a ticket out of its queue (its client left, or it waited too long).
-- When it was at the head, the next ticket is woken to try in its place.
--
-- KEYS[1]  the family's queue                ({prefix}queue:{family})
-- KEYS[2]  ticket expiry set                 ({prefix}tickets)
-- KEYS[3]  the identity's waiting counter    ({prefix}waiting:{identity})
-- KEYS[4]  families with a queue             ({prefix}queued)
-- ARGV[1]  ticket
-- ARGV[2]  family
-- ARGV[3]  wake channel                      ({prefix}wake)
--
-- Returns 1 if the ticket was still queued, else 0.

local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not rank then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local w = redis.call('DECR', KEYS[3])
if w <= 0 then redis.call('DEL', KEYS[3]) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if not head then
  redis.call('SREM', KEYS[4], ARGV[2])
elseif rank == 0 then
  redis.call('PUBLISH', ARGV[3], head)
end
return 1
