-- Give a lease back and record what the request learned, atomically.
--
-- The in-flight count drops only if the lease was still live, so a lease that
-- already expired (and was reaped by lease_key.lua) is never given back twice.
--
-- KEYS[1]  the key's hash                  ({prefix}key:{id})
-- KEYS[2]  the lease expiry set            ({prefix}leases)
-- KEYS[3]  the family's usage hash         ({prefix}usage:family:{family})
-- KEYS[4]  the total usage hash            ({prefix}usage:total)
-- KEYS[5]  identities recently served      ({prefix}active)
-- ARGV[1]  lease id
-- ARGV[2]  outcome: ok | failed | rate_limited | over_quota | revoked
-- ARGV[3]  cooldown end, ms (with rate_limited)
-- ARGV[4]  1 to count a served prompt, else 0
-- ARGV[5]  input tokens
-- ARGV[6]  output tokens
-- ARGV[7]  why, a short text kept as status_reason (with over_quota / revoked)
-- ARGV[8]  the identity served ("" for none), recorded with ARGV[9]
-- ARGV[9]  now, ms; identities not served for an hour are dropped
--
-- Returns the key's status after the update.

if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  local left = redis.call('HINCRBY', KEYS[1], 'inflight', -1)
  if left < 0 then redis.call('HSET', KEYS[1], 'inflight', 0) end
end

local status = redis.call('HGET', KEYS[1], 'status')

if ARGV[4] == '1' then
  local input, output = tonumber(ARGV[5]), tonumber(ARGV[6])
  local targets = {KEYS[3], KEYS[4]}
  if status then targets[3] = KEYS[1] end
  for _, h in ipairs(targets) do
    redis.call('HINCRBY', h, 'prompts', 1)
    redis.call('HINCRBY', h, 'input_tokens', input)
    redis.call('HINCRBY', h, 'output_tokens', output)
  end
end
if ARGV[8] ~= '' then
  local now = tonumber(ARGV[9])
  redis.call('ZADD', KEYS[5], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 3600000)
end
if not status then return false end

local outcome = ARGV[2]
if status ~= 'disabled' then
  if outcome == 'rate_limited' and status ~= 'revoked' and status ~= 'over_quota' then
    local till = tonumber(ARGV[3])
    local current = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until')) or 0
    if till > current then redis.call('HSET', KEYS[1], 'cooldown_until', till) end
    status = 'cooling_down'
    redis.call('HSET', KEYS[1], 'status', status)
  elseif outcome == 'over_quota' or outcome == 'revoked' then
    status = outcome
    redis.call('HSET', KEYS[1], 'status', status, 'status_reason', ARGV[7])
  end
end

return status
