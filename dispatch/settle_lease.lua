-- Give a lease back and record what the request learned, atomically. Prepended with
-- candidates.lua (store_now, file_key): the key is re-filed where its new state puts it.
--
-- The in-flight count drops only if the lease was still live, so a lease that
-- already expired (and was reaped by lease_key.lua) is never given back twice.
-- Times are the store's: a cooldown and a budget's reset arrive as durations.
-- Adaptive concurrency (AIMD): a 429 halves the number of requests the key is given at
-- once (`limit`, from how many were in flight); replies served at that limit raise it slowly.
-- A 429 rests the key only when it was the key's one request in flight.
--
-- KEYS[1]  the key's hash                    ({prefix}key:{id})
-- KEYS[2]  the lease expiry set              ({prefix}leases)
-- KEYS[3]  the family's usage hash           ({prefix}usage:family:{family})
-- KEYS[4]  the total usage hash              ({prefix}usage:total)
-- KEYS[5]  identities recently served        ({prefix}active)
-- KEYS[6]  families with a queue             ({prefix}queued)
-- KEYS[7]  ticket expiry set                 ({prefix}tickets)
-- KEYS[8]  the usage events stream          ({prefix}usage_events)
-- KEYS[9]  (with `account`) the user's hash   ({prefix}user:{id})
-- KEYS[10] (with `account`) the user's cost reservations ({prefix}user:{id}:holds)
-- Chosen at run time, so not in KEYS (same prefix): the queue of each family in KEYS[6]
-- ({prefix}queue:{family}) and the candidate sets the key is filed in.
-- ARGV[1]  one JSON object, so caller and script cannot drift apart:
--   prefix         {prefix}
--   lease          lease id ("{key id}:{nonce}")
--   outcome        ok | failed | rate_limited | over_quota | revoked
--   cooldown_ms    how long the key rests (with rate_limited)
--   counted        true to count a served prompt
--   input_tokens, output_tokens
--   estimated      true when the usage was counted by the gateway, not reported by upstream
--   reason         a short text kept as status_reason (with over_quota / revoked)
--   identity       the identity served ("" for none); identities not served for an hour are dropped
--   requests_remaining, requests_reset_in_ms, tokens_remaining, tokens_reset_in_ms
--                  the key's upstream rate-limit budget as this reply reported it; -1 where it said nothing
--   tier           the key's usage tier as this reply's limits suggest ("" = unknown)
--   max_inflight   KEY_CONCURRENCY (0: none); a learned limit never grows past it
--   limit_step     how much one reply served at the learned limit raises it
--   queue_prefix   {prefix}queue:
--   wake           wake channel ({prefix}wake)
--   family         the model family served
--   account        true when the usage is a user's (KEYS[8]): their count for the family is corrected
--                  from the tokens reserved at admission to what was served, never below zero
--   reserved       tokens reserved at admission (with account)
--   Money (issue 13; budget_month() from dispatch/month.lua is prepended; micro-dollars):
--   cost           what the request cost, priced from its usage (catalog/prices.py)
--   hold           the cost reservation made at admission ("" for none): removed, replaced by `cost`
--   tz_offset      seconds BUDGET_TIME_ZONE is ahead of UTC now (which month the cost counts in)
--   event          with counted usage, the usage record to append to KEYS[8] (flat field/value list;
--                  the store's time is added as `time`), trimmed to about `events_max` entries
--
-- A released key wakes the ticket at the head of each queue it can serve, so
-- exactly one waiter per family tries to claim it: no polling, no herd.
--
-- Returns {the key's status after the update ("" for a key gone), cost, the month's spend and requests
-- of whoever was served (-1 when not counted)}.

local a = cjson.decode(ARGV[1])
local now = store_now()

local in_flight_with_it = (tonumber(redis.call('HGET', KEYS[1], 'inflight')) or 0)
if redis.call('ZREM', KEYS[2], a.lease) == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  local left = redis.call('HINCRBY', KEYS[1], 'inflight', -1)
  if left < 0 then redis.call('HSET', KEYS[1], 'inflight', 0) end
else
  in_flight_with_it = in_flight_with_it + 1  -- reaped already: it was one more than is counted now
end

local status = redis.call('HGET', KEYS[1], 'status')

if a.counted then
  local targets = {KEYS[3], KEYS[4]}
  if status then targets[3] = KEYS[1] end
  for _, h in ipairs(targets) do
    redis.call('HINCRBY', h, 'prompts', 1)
    redis.call('HINCRBY', h, 'input_tokens', a.input_tokens)
    redis.call('HINCRBY', h, 'output_tokens', a.output_tokens)
    if a.estimated then redis.call('HINCRBY', h, 'estimated_prompts', 1) end
  end
end
if a.account and redis.call('EXISTS', KEYS[9]) == 1 then
  local served = a.input_tokens + a.output_tokens
  local used = redis.call('HINCRBY', KEYS[9], 'used:' .. a.family, served - a.reserved)
  if used < 0 then redis.call('HSET', KEYS[9], 'used:' .. a.family, 0) end
  redis.call('HINCRBY', KEYS[9], 'input:' .. a.family, a.input_tokens)
  redis.call('HINCRBY', KEYS[9], 'output:' .. a.family, a.output_tokens)
  redis.call('HINCRBY', KEYS[9], 'prompt_count', 1)
end
-- >>> money: the cost replaces the reservation; per user, key, family and month; the usage event >>>
local spend = {0, -1, -1}
if a.counted then
  local month = budget_month(now, a.tz_offset)
  local cost_field = 'cost:' .. month
  spend[1] = a.cost
  for _, h in ipairs({KEYS[3], KEYS[4]}) do
    redis.call('HINCRBY', h, cost_field, a.cost)
    redis.call('HINCRBY', h, 'cost', a.cost)
  end
  if status then redis.call('HINCRBY', KEYS[1], cost_field, a.cost) end
  if a.account then
    if a.hold ~= '' then redis.call('ZREM', KEYS[10], a.hold) end
    if redis.call('EXISTS', KEYS[9]) == 1 then
      spend[2] = redis.call('HINCRBY', KEYS[9], cost_field, a.cost)
      spend[3] = redis.call('HINCRBY', KEYS[9], 'requests:' .. month, 1)
    end
  else  -- anonymous callers: one shared month
    spend[2] = redis.call('HINCRBY', KEYS[4], 'anon_' .. cost_field, a.cost)
    spend[3] = redis.call('HINCRBY', KEYS[4], 'anon_requests:' .. month, 1)
  end
  local event = a.event
  table.insert(event, 'time')
  table.insert(event, tostring(now))
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', a.events_max, '*', unpack(event))
end
-- <<< money <<<
if a.identity ~= '' then
  redis.call('ZADD', KEYS[5], now, a.identity)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 3600000)
end
if not status then return {'', spend[1], spend[2], spend[3]} end

local outcome = a.outcome
if status ~= 'disabled' then
  if outcome == 'rate_limited' and status ~= 'revoked' and status ~= 'over_quota' then
    -- Multiplicative decrease: upstream refused at this many in flight, so half of it (at least one).
    local limit = tonumber(redis.call('HGET', KEYS[1], 'limit')) or 0
    local seen = in_flight_with_it
    if limit >= 1 then seen = math.min(seen, limit) end
    redis.call('HSET', KEYS[1], 'limit', math.max(1, math.floor(seen / 2)))
    -- Refused while others were in flight on it: too many at once, and the others are still being
    -- served, so the smaller limit is the answer. Refused alone: a budget is spent, so it rests.
    if in_flight_with_it <= 1 then
      local till = now + a.cooldown_ms
      local current = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until')) or 0
      if till > current then redis.call('HSET', KEYS[1], 'cooldown_until', till) end
      status = 'cooling_down'
      redis.call('HSET', KEYS[1], 'status', status)
    end
  elseif outcome == 'over_quota' or outcome == 'revoked' then
    status = outcome
    redis.call('HSET', KEYS[1], 'status', status, 'status_reason', a.reason)
  end
end

-- Additive increase: a reply served at the learned limit probes a little higher (a whole request
-- after `1 / limit_step` such replies), never past KEY_CONCURRENCY, where the limit is forgotten.
if outcome == 'ok' and status == 'active' then
  local limit = tonumber(redis.call('HGET', KEYS[1], 'limit')) or 0
  if limit >= 1 and in_flight_with_it >= math.floor(limit) then
    limit = limit + a.limit_step
    if a.max_inflight > 0 and limit >= a.max_inflight then
      redis.call('HDEL', KEYS[1], 'limit')
    else
      redis.call('HSET', KEYS[1], 'limit', limit)
    end
  end
end

if a.tier ~= '' then redis.call('HSET', KEYS[1], 'tier', a.tier) end

if a.requests_remaining >= 0 then redis.call('HSET', KEYS[1], 'rl_requests_remaining', a.requests_remaining) end
if a.requests_reset_in_ms >= 0 then redis.call('HSET', KEYS[1], 'rl_requests_reset', now + a.requests_reset_in_ms) end
if a.tokens_remaining >= 0 then redis.call('HSET', KEYS[1], 'rl_tokens_remaining', a.tokens_remaining) end
if a.tokens_reset_in_ms >= 0 then redis.call('HSET', KEYS[1], 'rl_tokens_reset', now + a.tokens_reset_in_ms) end

local kid = string.match(a.lease, '^([^:]+):')
file_key(a.prefix, kid, now)
status = redis.call('HGET', KEYS[1], 'status')  -- a cooldown already over is active again

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
      local queue = a.queue_prefix .. fam
      local start, woke = 0, false
      while not woke do
        local batch = redis.call('ZRANGE', queue, start, start + 9)
        if #batch == 0 then break end
        for _, t in ipairs(batch) do
          local alive = tonumber(redis.call('ZSCORE', KEYS[7], t))
          if alive and alive >= now then
            redis.call('PUBLISH', a.wake, t)
            woke = true
            break
          end
        end
        start = start + 10
      end
    end
  end
end

return {status, spend[1], spend[2], spend[3]}
