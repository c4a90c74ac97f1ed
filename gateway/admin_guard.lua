-- Judge one admin login attempt from an address: check the lockout and count a failure in one step,
-- so concurrent wrong guesses cannot all be checked against the count as it was before any of them.
--
-- KEYS[1]  failed attempts from the address   ({prefix}admin:failures:{address})
-- ARGV[1]  failures allowed; at this many the address is locked out
-- ARGV[2]  lockout, ms (also how long failures are remembered)
-- ARGV[3]  1 when the attempt carried a wrong or no key (it is counted), 0 when the key was right
--
-- Returns {locked (1|0), failures so far, ms until the lockout ends (-1: no expiry yet)}.

local limit = tonumber(ARGV[1])
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures >= limit then
    return {1, failures, redis.call('PTTL', KEYS[1])}
end
if ARGV[3] ~= '1' then
    return {0, failures, -1}
end
failures = redis.call('INCR', KEYS[1])
if failures == 1 or failures >= limit then
    -- remembered for the lockout's length from the first failure, and locked for all of it from the last
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {0, failures, redis.call('PTTL', KEYS[1])}
