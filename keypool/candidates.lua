-- The candidate structures: where each key is filed, so a lease looks at one sorted set's head
-- instead of walking every key. Not a script of its own: it is prepended to every script that
-- changes a key's state (keypool/scripts.py), so they all file a key the same way.
--
-- Per provider and per family set (a key serving every family is filed under "*", one limited
-- to some families under each of them):
--   {prefix}ready:{provider}:{set}    ZSET  key id -> inflight * 1e13 + last_used (ms): the head is the
--                                           key with fewest requests in flight, then least recently used
--   {prefix}resting:{provider}:{set}  ZSET  key id -> when it may serve again (ms, store clock): its
--                                           cooldown end or the reset of the upstream budget it spent;
--                                           FULL when it is at the concurrency it learned (`limit`) and
--                                           comes back only when one of its leases is returned
-- A disabled, revoked or over-quota key is in neither. The key's hash remembers where it is filed
-- (`filed` = "{provider}|{set},{set}"), so a change of its families or its removal unfiles it exactly.
-- These keys are chosen at run time from the key's hash, so scripts cannot name them in KEYS;
-- they all share the prefix.

-- "Until a lease on it is returned": later than any real time, so never brought back by the clock.
local FULL = 9e15

-- Now, ms, from the store's clock: the one clock every gateway process compares against.
local function store_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function family_sets(families)
  if not families or families == '' or families == '*' then return {'*'} end
  local sets = {}
  for f in string.gmatch(families, '[^,]+') do
    if f == '*' then return {'*'} end
    sets[#sets + 1] = f
  end
  return sets
end

local function unfile_key(prefix, kid)
  local h = prefix .. 'key:' .. kid
  local filed = redis.call('HGET', h, 'filed')
  if not filed then return end
  local provider, sets = string.match(filed, '^([^|]*)|(.*)$')
  for set in string.gmatch(sets or '', '[^,]+') do
    redis.call('ZREM', prefix .. 'ready:' .. provider .. ':' .. set, kid)
    redis.call('ZREM', prefix .. 'resting:' .. provider .. ':' .. set, kid)
  end
  redis.call('HDEL', h, 'filed')
end

-- File the key where its state says it belongs now; a cooldown that has ended is over.
-- Returns 'ready', 'resting' or 'out'.
local function file_key(prefix, kid, now)
  local h = prefix .. 'key:' .. kid
  local f = redis.call('HMGET', h, 'provider', 'status', 'families', 'cooldown_until', 'inflight', 'last_used',
    'rl_requests_remaining', 'rl_requests_reset', 'rl_tokens_remaining', 'rl_tokens_reset', 'filed', 'limit')
  local provider, status = f[1], f[2]
  if not provider or not status or status == 'disabled' or status == 'revoked' or status == 'over_quota' then
    unfile_key(prefix, kid)
    return 'out'
  end
  local inflight = tonumber(f[5]) or 0
  local back = 0
  if status == 'cooling_down' then
    local till = tonumber(f[4]) or 0
    if till <= now then
      redis.call('HSET', h, 'status', 'active', 'cooldown_until', 0)
    else
      back = till
    end
  end
  -- Pacing: a budget upstream reported as spent, whose reset has not come, would only earn a 429.
  local req_reset = tonumber(f[8]) or 0
  if req_reset > now and (tonumber(f[7]) or 1) - inflight <= 0 then back = math.max(back, req_reset) end
  local tok_reset = tonumber(f[10]) or 0
  if tok_reset > now and (tonumber(f[9]) or 1) <= 0 then back = math.max(back, tok_reset) end
  -- Adaptive concurrency: at the number of requests upstream has lately shown it takes at once.
  local limit = tonumber(f[12]) or 0
  if back == 0 and limit >= 1 and inflight >= math.floor(limit) then back = FULL end

  local sets = family_sets(f[3])
  local filed = provider .. '|' .. table.concat(sets, ',')
  if f[11] and f[11] ~= filed then unfile_key(prefix, kid) end
  local score = math.min(inflight, 899) * 1e13 + (tonumber(f[6]) or 0)
  for _, set in ipairs(sets) do
    local ready = prefix .. 'ready:' .. provider .. ':' .. set
    local resting = prefix .. 'resting:' .. provider .. ':' .. set
    if back > 0 then
      redis.call('ZREM', ready, kid)
      redis.call('ZADD', resting, back, kid)
    else
      redis.call('ZREM', resting, kid)
      redis.call('ZADD', ready, score, kid)
    end
  end
  if f[11] ~= filed then redis.call('HSET', h, 'filed', filed) end
  if back > 0 then return 'resting' end
  return 'ready'
end

-- Keys of the set whose rest is over come back (lazily, at lease time): O(log N) when none are due.
local function bring_back(prefix, resting, now)
  for _, kid in ipairs(redis.call('ZRANGEBYSCORE', resting, '-inf', now)) do
    if file_key(prefix, kid, now) == 'out' then redis.call('ZREM', resting, kid) end  -- a key gone meanwhile
  end
end

-- ========================================================================================
