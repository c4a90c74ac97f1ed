-- Lease the best key of a provider for a model family, atomically; the fast path and
-- the head of the family's queue both come through here, so claiming the head of the
-- queue and leasing a key are one step.
--
-- Housekeeping first: leases whose holder stopped renewing them (a crashed process)
-- are given back, and tickets at the head of the queue whose process stopped
-- renewing them are dropped, so neither can hold capacity or the head for ever.
--
-- A key may be leased when it serves the family and is active (or its cooldown has
-- ended), is under KEY_CONCURRENCY, and its last known upstream rate-limit budget
-- (requests and tokens remaining until their reset) is not spent. Among those:
-- fewest in flight, then least recently used.
--
-- KEYS[1]  the provider's key set            ({prefix}keys:{provider})
-- KEYS[2]  the lease expiry set              ({prefix}leases)
-- KEYS[3]  the family's queue                ({prefix}queue:{family}; ticket -> fair-order score)
-- KEYS[4]  ticket expiry set                 ({prefix}tickets; ticket -> expiry ms)
-- KEYS[5]  the family's recent dispatches    ({prefix}served:{family}; list of ms)
-- KEYS[6]  the family's recent queue waits   ({prefix}waits:{family}; list of "ms:wait_ms")
-- KEYS[7]  families with a queue             ({prefix}queued)
-- KEYS[8]  the family's virtual time         ({prefix}vtime:{family}; score of the last dispatched ticket)
-- ARGV[1]  now, ms
-- ARGV[2]  model family
-- ARGV[3]  lease TTL, ms
-- ARGV[4]  lease nonce (unique per lease)
-- ARGV[5]  key hash prefix                   ({prefix}key:)
-- ARGV[6]  the caller's ticket ("" on the fast path)
-- ARGV[7]  most requests in flight per key (0: no limit)
-- ARGV[8]  waiting-counter prefix            ({prefix}waiting:)
-- ARGV[9]  wake channel                      ({prefix}wake)
--
-- Returns {1, key_id, lease_id, secret, organization} on success, else {0, reason, n}:
--   "no_keys"      nothing can serve this family at all (n = 0)
--   "unavailable"  keys exist, none may be used now; n = ms until the first comes back (0: unknown)
--   "queued"       (fast path) others are waiting: join the queue behind them
--   "behind"       (ticket) not at the head yet; n = position (0-based), then (for position 1)
--                  ms until the head's ticket expires unless renewed
--   "gone"         (ticket) the ticket is no longer queued (it expired)

local now = tonumber(ARGV[1])
local family = ARGV[2]
local ttl = tonumber(ARGV[3])
local prefix = ARGV[5]
local ticket = ARGV[6]
local max_inflight = tonumber(ARGV[7])

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, lease in ipairs(expired) do
  local kid = string.match(lease, '^([^:]+):')
  if kid and redis.call('EXISTS', prefix .. kid) == 1 then
    local left = redis.call('HINCRBY', prefix .. kid, 'inflight', -1)
    if left < 0 then redis.call('HSET', prefix .. kid, 'inflight', 0) end
  end
  redis.call('ZREM', KEYS[2], lease)
end

-- Tickets are "{enqueued ms}|{id}|{identity}".
local function forget_ticket(t)
  redis.call('ZREM', KEYS[3], t)
  redis.call('ZREM', KEYS[4], t)
  local identity = string.match(t, '^[^|]*|[^|]*|(.*)$')
  if identity then
    local w = redis.call('DECR', ARGV[8] .. identity)
    if w <= 0 then redis.call('DEL', ARGV[8] .. identity) end
  end
end

local purged = false
while true do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head then break end
  local alive = tonumber(redis.call('ZSCORE', KEYS[4], head))
  if alive and alive >= now then break end
  forget_ticket(head)
  purged = true
end
local waiting = redis.call('ZCARD', KEYS[3])
if waiting == 0 then redis.call('SREM', KEYS[7], family) end

-- Whoever purged a dead head wakes the new one: nobody else will (no key is released).
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if purged and head and head ~= ticket then redis.call('PUBLISH', ARGV[9], head) end
if ticket == '' then
  if waiting > 0 then return {0, 'queued', 0} end
else
  local rank = redis.call('ZRANK', KEYS[3], ticket)
  if not rank then return {0, 'gone', 0} end
  if rank > 0 then
    -- The next in line also tries when the head's ticket would expire, should its process have died.
    local head_left = 0
    if rank == 1 then head_left = math.max((tonumber(redis.call('ZSCORE', KEYS[4], head)) or now) - now, 0) + 1 end
    return {0, 'behind', rank, head_left}
  end
end

local function serves(families)
  if families == false or families == '' or families == '*' then return true end
  for f in string.gmatch(families, '[^,]+') do
    if f == family or f == '*' then return true end
  end
  return false
end

local best, best_inflight, best_used = nil, nil, nil
local any_serves = false
local soonest = nil
local function comes_back_at(t)
  if soonest == nil or t < soonest then soonest = t end
end
for _, kid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = prefix .. kid
  local f = redis.call('HMGET', h, 'status', 'cooldown_until', 'inflight', 'last_used', 'families',
    'rl_requests_remaining', 'rl_requests_reset', 'rl_tokens_remaining', 'rl_tokens_reset')
  local status = f[1]
  if status and serves(f[5]) then
    if status ~= 'disabled' and status ~= 'revoked' and status ~= 'over_quota' then any_serves = true end
    if status == 'cooling_down' then
      local till = tonumber(f[2]) or 0
      if till <= now then
        redis.call('HSET', h, 'status', 'active', 'cooldown_until', 0)
        status = 'active'
      else
        comes_back_at(till)
      end
    end
    local inflight = tonumber(f[3]) or 0
    if status == 'active' then
      local usable = max_inflight <= 0 or inflight < max_inflight
      -- Pacing: a budget upstream reported as spent, whose reset has not come, would only earn a 429.
      local req_reset = tonumber(f[7]) or 0
      if usable and req_reset > now and (tonumber(f[6]) or 1) - inflight <= 0 then
        usable = false
        comes_back_at(req_reset)
      end
      local tok_reset = tonumber(f[9]) or 0
      if usable and tok_reset > now and (tonumber(f[8]) or 1) <= 0 then
        usable = false
        comes_back_at(tok_reset)
      end
      if usable then
        local used = tonumber(f[4]) or 0
        if best == nil or inflight < best_inflight or (inflight == best_inflight and used < best_used) then
          best, best_inflight, best_used = kid, inflight, used
        end
      end
    end
  end
end

if best == nil then
  if not any_serves then return {0, 'no_keys', 0} end
  if soonest == nil then return {0, 'unavailable', 0} end
  return {0, 'unavailable', math.max(soonest - now, 1)}
end

local h = prefix .. best
redis.call('HINCRBY', h, 'inflight', 1)
redis.call('HSET', h, 'last_used', now)
local lease = best .. ':' .. ARGV[4]
redis.call('ZADD', KEYS[2], now + ttl, lease)
redis.call('LPUSH', KEYS[5], now)
redis.call('LTRIM', KEYS[5], 0, 999)

if ticket ~= '' then
  local enqueued = tonumber(string.match(ticket, '^(%d+)|')) or now
  redis.call('SET', KEYS[8], redis.call('ZSCORE', KEYS[3], ticket))
  forget_ticket(ticket)
  redis.call('LPUSH', KEYS[6], now .. ':' .. (now - enqueued))
  redis.call('LTRIM', KEYS[6], 0, 49)
  local next_head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if next_head then
    redis.call('PUBLISH', ARGV[9], next_head)  -- perhaps another key is free: the next in line tries
  else
    redis.call('SREM', KEYS[7], family)
  end
end

local secret = redis.call('HGET', h, 'secret') or ''
local org = redis.call('HGET', h, 'organization') or ''
return {1, best, lease, secret, org}
