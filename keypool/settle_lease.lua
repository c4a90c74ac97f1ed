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
-- KEYS[6]  families with a queue             ({prefix}queued)
-- KEYS[7]  ticket expiry set                 ({prefix}tickets)
-- ARGV[1]  lease id
-- ARGV[2]  outcome: ok | failed | rate_limited | over_quota | revoked
-- ARGV[3]  cooldown end, ms (with rate_limited)
-- ARGV[4]  1 to count a served prompt, else 0
-- ARGV[5]  input tokens
-- ARGV[6]  output tokens
-- ARGV[7]  why, a short text kept as status_reason (with over_quota / revoked)
-- ARGV[8]  the identity served ("" for none), recorded with ARGV[9]
-- ARGV[9]  now, ms; identities not served for an hour are dropped
-- ARGV[10..13]  the key's upstream rate-limit budget as this reply reported it: requests remaining,
--          their reset (ms), tokens remaining, their reset (ms); -1 where the reply said nothing
-- ARGV[14] queue key prefix                  ({prefix}queue:)
-- ARGV[15] wake channel                      ({prefix}wake)
-- ARGV[16] the key's usage tier as this reply's limits suggest ("" = unknown)
-- ARGV[17] 1 when the tokens are poolgate's estimate (upstream's usage never arrived), else 0
--
-- A released key wakes the ticket at the head of each queue it can serve, so
-- exactly one waiter per family tries to claim it: no polling, no herd.
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
    if ARGV[17] == '1' then redis.call('HINCRBY', h, 'estimated_prompts', 1) end
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

if ARGV[16] ~= '' then redis.call('HSET', KEYS[1], 'tier', ARGV[16]) end

local rl = {'rl_requests_remaining', 'rl_requests_reset', 'rl_tokens_remaining', 'rl_tokens_reset'}
for i = 1, 4 do
  local v = tonumber(ARGV[9 + i])
  if v and v >= 0 then redis.call('HSET', KEYS[1], rl[i], v) end
end

if status == 'active' or status == 'cooling_down' then
  local families = redis.call('HGET', KEYS[1], 'families') or '*'
  for _, fam in ipairs(redis.call('SMEMBERS', KEYS[6])) do
    local serves = families == '*' or families == ''
    if not serves then
      for f in string.gmatch(families, '[^,]+') do
        if f == fam or f == '*' then serves = true end
      end
    end
    if serves then
      -- Wake the first live ticket. Dead ones ahead of it (a crashed process's) are only passed
      -- over here: the woken ticket's claim (lease_key.lua) drops them from the head.
      local queue = ARGV[14] .. fam
      local now = tonumber(ARGV[9])
      local start, woke = 0, false
      while not woke do
        local batch = redis.call('ZRANGE', queue, start, start + 9)
        if #batch == 0 then break end
        for _, t in ipairs(batch) do
          local alive = tonumber(redis.call('ZSCORE', KEYS[7], t))
          if alive and alive >= now then
            redis.call('PUBLISH', ARGV[15], t)
            woke = true
            break
          end
        end
        start = start + 10
      end
    end
  end
end

return status
