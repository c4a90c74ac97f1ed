-- Schedule the recheck of a key that real traffic just retired (revoked, out of quota), atomically.
--
-- Several requests in flight on one key may all report its retirement; only the
-- first schedules (recheck_pending), so the backoff is not stepped N times. A
-- key that was revived by a check and fails again soon after steps further
-- back; one that served well for longer than the window starts over.
--
-- KEYS[1]  the key's hash                  ({prefix}key:{id})
-- Prepended with candidates.lua for store_now: times are the store's clock.
-- ARGV[1]  recheck backoff steps, ms, comma-separated; the last one repeats
-- ARGV[2]  window, ms: a key revived less than this long ago that fails again steps further back
--
-- Returns the time of the recheck (ms), or false when nothing was scheduled.

local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'revoked' and status ~= 'over_quota' then return false end
if redis.call('HGET', KEYS[1], 'recheck_pending') == '1' then return false end

local steps = {}
for step in string.gmatch(ARGV[1], '[^,]+') do steps[#steps + 1] = tonumber(step) end
if #steps == 0 then return false end

local now = store_now()
local revived_at = tonumber(redis.call('HGET', KEYS[1], 'revived_at')) or 0
local attempt = 0
if revived_at > 0 and now - revived_at < tonumber(ARGV[2]) then
  attempt = (tonumber(redis.call('HGET', KEYS[1], 'recheck_attempt')) or 0) + 1
end
local next_at = now + steps[math.min(attempt + 1, #steps)]
redis.call('HSET', KEYS[1], 'recheck_attempt', attempt, 'recheck_pending', 1, 'next_check_at', next_at)
return next_at
