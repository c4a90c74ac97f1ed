-- Count one sign-in attempt from an address and say whether it may go on: a sliding minute, on the store's
-- clock, so every gateway process counts the same attempts. Refused attempts are not counted.
--
-- KEYS[1]  {prefix}signin_limit:{address}   ZSET  attempt id -> time (ms)
-- ARGV[1]  attempts allowed in any 60 s
-- ARGV[2]  a unique id for this attempt
--
-- Returns 0 when it may go on, else the ms until it may try again.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) or now
  return math.max(oldest + 60000 - now, 1)
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 60000)
return 0
