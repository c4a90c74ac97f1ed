-- Put a ticket in its family's queue, in fair order.
--
-- Order is start-time fair queuing between identities: a ticket's score is the
-- later of the queue's virtual time (the score of the last ticket dispatched)
-- and the identity's own tail, plus its token punishment; the identity's tail
-- then moves on past it. One identity's tenth request therefore lines up
-- behind everyone else's first, however fast it sent them, and a large prompt
-- lets that many smaller ones go first. A retried request passes its original
-- score and keeps its place.
--
-- KEYS[1]  the family's queue                ({prefix}queue:{family})
-- KEYS[2]  ticket expiry set                 ({prefix}tickets)
-- KEYS[3]  the identity's waiting counter    ({prefix}waiting:{identity})
-- KEYS[4]  the identity's tail in the family ({prefix}tail:{family}:{identity})
-- KEYS[5]  the family's virtual time         ({prefix}vtime:{family})
-- KEYS[6]  families with a queue             ({prefix}queued)
-- KEYS[7]  families that ever had one        ({prefix}families)
-- ARGV[1]  the ticket's tail, "{random id}|{identity}"
-- ARGV[2]  the request's arrival stamp, ms, from an earlier join of the same request; "" to stamp it now
-- ARGV[3]  ticket TTL, ms (renewed by its process)
-- ARGV[4]  most tickets one identity may have waiting (0: no limit)
-- ARGV[5]  the ticket's token punishment, in requests (0 for most)
-- ARGV[6]  family
-- ARGV[7]  fixed score for a retried request, or ""
--
-- Times are the store's clock (TIME): a ticket is "{arrival stamp, 13 digits}|{random id}|{identity}",
-- so equal scores order by arrival on one clock, whichever gateway stamped them.
--
-- Returns {1, score, position, ticket, stamp} or {0, waiting} when the identity is at its limit.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stamp = tonumber(ARGV[2]) or now
local ticket = string.format('%013d', stamp) .. '|' .. ARGV[1]
local limit = tonumber(ARGV[4])
local waiting = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[7] == '' and limit > 0 and waiting >= limit then
  return {0, waiting}
end

local score
if ARGV[7] ~= '' then
  score = tonumber(ARGV[7])
else
  local vtime = tonumber(redis.call('GET', KEYS[5]) or '0')
  local tail = tonumber(redis.call('GET', KEYS[4]) or '0')
  score = math.max(vtime, tail) + tonumber(ARGV[5])
  redis.call('SET', KEYS[4], tostring(score + 1), 'PX', 3600000)
end

redis.call('ZADD', KEYS[1], score, ticket)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ticket)
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 3600000)
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('SADD', KEYS[7], ARGV[6])
return {1, tostring(score), redis.call('ZRANK', KEYS[1], ticket), ticket, stamp}
