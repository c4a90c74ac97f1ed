-- Record what a key check learned and decide the key's status and next check, atomically.
--
-- A check that began when the key had another status (traffic retired it, an
-- operator disabled it meanwhile) only records what it saw: the newer word
-- stands. So two checks of one key at once, or a check racing real traffic,
-- can never undo each other.
--
-- Prepended with candidates.lua: times are the store's clock, and the key is re-filed as a lease
-- candidate (its status or families may have changed).
--
-- KEYS[1]  the key's hash                  ({prefix}key:{id})
-- Chosen at run time, so not in KEYS (same prefix): the candidate sets the key is filed in.
-- ARGV[1]  the key's status when the check began
-- ARGV[2]  verdict: valid | revoked | over_quota | unknown
-- ARGV[3]  model families, comma-separated ("" = not learned, keep what is there)
-- ARGV[4]  tier ("" = keep)
-- ARGV[5]  organizations, comma-separated ("" = keep)
-- ARGV[6]  what the check found, a short text (never upstream's words)
-- ARGV[7]  prefix                          ({prefix})
-- ARGV[8]  the provider's regular check interval, ms
-- ARGV[9]  recheck backoff steps, ms, comma-separated; the last one repeats
--
-- Returns {status after, 1 if the check changed the status else 0}, or false when the key is gone.

if redis.call('EXISTS', KEYS[1]) == 0 then return false end

local now = store_now()
local kid = string.sub(KEYS[1], string.len(ARGV[7] .. 'key:') + 1)
local interval = tonumber(ARGV[8])
redis.call('HSET', KEYS[1], 'checked_at', now, 'check_result', ARGV[6])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'families', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'tier', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'organizations', ARGV[5]) end

local steps = {}
for step in string.gmatch(ARGV[9], '[^,]+') do steps[#steps + 1] = tonumber(step) end
local function backoff(attempt)
  if #steps == 0 then return interval end
  return steps[math.min(attempt + 1, #steps)]
end

local status = redis.call('HGET', KEYS[1], 'status') or 'active'
if status ~= ARGV[1] then
  file_key(ARGV[7], kid, now)  -- its families may have been learned
  return {status, 0}
end

local verdict = ARGV[2]
local retired = status == 'revoked' or status == 'over_quota'
local attempt = tonumber(redis.call('HGET', KEYS[1], 'recheck_attempt')) or 0
local changed = 0
local next_at

if status == 'disabled' then
  next_at = now + interval
elseif verdict == 'valid' then
  if retired then
    -- Back on probation: if its quota is still gone, the next real request says so and retires it again.
    redis.call('HSET', KEYS[1], 'status', 'active', 'status_reason', '', 'revived_at', now)
    status = 'active'
    changed = 1
  end
  redis.call('HSET', KEYS[1], 'recheck_pending', 0)
  next_at = now + interval
elseif verdict == 'revoked' or verdict == 'over_quota' then
  if retired then attempt = attempt + 1 else attempt = 0 end
  if status ~= verdict then changed = 1 end
  status = verdict
  redis.call('HSET', KEYS[1], 'status', status, 'status_reason', ARGV[6], 'recheck_attempt', attempt,
    'recheck_pending', 1)
  next_at = now + backoff(attempt)
else
  -- Nothing certain (upstream down, rate-limited, forbidden to list models): the key stays as it was.
  if retired then
    attempt = attempt + 1
    redis.call('HSET', KEYS[1], 'recheck_attempt', attempt)
    next_at = now + backoff(attempt)
  else
    next_at = now + backoff(0)
  end
end

redis.call('HSET', KEYS[1], 'next_check_at', next_at)
file_key(ARGV[7], kid, now)
return {status, changed}
