-- Renew live leases (or queue tickets) of one process, on the store's clock. Prepended with
-- candidates.lua (store_now).
--
-- KEYS[1]  the expiry set                    ({prefix}leases or {prefix}tickets; member -> expiry ms)
-- ARGV[1]  TTL, ms
-- ARGV[2..] the members to renew; one already reaped, settled or dropped stays gone (XX)
--
-- Returns the new expiry, ms.

local at = store_now() + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', at, ARGV[i]) end
return at
