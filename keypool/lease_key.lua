-- Lease the best key of a provider for a model family, atomically.
--
-- First gives back leases whose holder stopped renewing them (a crashed process),
-- then picks, among keys that are active (or whose cooldown has ended) and serve
-- the family: fewest requests in flight, then least recently used.
--
-- KEYS[1]  the provider's key set          ({prefix}keys:{provider})
-- KEYS[2]  the lease expiry set            ({prefix}leases)
-- ARGV[1]  now, ms
-- ARGV[2]  model family
-- ARGV[3]  lease TTL, ms
-- ARGV[4]  lease nonce (unique per lease)
-- ARGV[5]  key hash prefix                 ({prefix}key:)
-- ARGV[6]  key ids to skip, comma-separated (keys this request already failed on)
--
-- Returns {1, key_id, lease_id, secret, organization} on success, or
-- {0, reason, retry_after_ms} where reason is "no_keys" (nothing can ever serve
-- this family) or "unavailable" (keys exist but none may be used now;
-- retry_after_ms is the soonest cooldown end, 0 if none will end by itself).

local now = tonumber(ARGV[1])
local family = ARGV[2]
local ttl = tonumber(ARGV[3])
local prefix = ARGV[5]

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, lease in ipairs(expired) do
  local kid = string.match(lease, '^([^:]+):')
  if kid and redis.call('EXISTS', prefix .. kid) == 1 then
    local left = redis.call('HINCRBY', prefix .. kid, 'inflight', -1)
    if left < 0 then redis.call('HSET', prefix .. kid, 'inflight', 0) end
  end
  redis.call('ZREM', KEYS[2], lease)
end

local skip = {}
for kid in string.gmatch(ARGV[6], '[^,]+') do skip[kid] = true end

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
for _, kid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = prefix .. kid
  local f = redis.call('HMGET', h, 'status', 'cooldown_until', 'inflight', 'last_used', 'families')
  local status = f[1]
  if status and serves(f[5]) then
    if status ~= 'disabled' and status ~= 'revoked' and status ~= 'over_quota' then any_serves = true end
    if status == 'cooling_down' then
      local till = tonumber(f[2]) or 0
      if till <= now then
        redis.call('HSET', h, 'status', 'active', 'cooldown_until', 0)
        status = 'active'
      elseif soonest == nil or till < soonest then
        soonest = till
      end
    end
    if status == 'active' and not skip[kid] then
      local inflight = tonumber(f[3]) or 0
      local used = tonumber(f[4]) or 0
      if best == nil or inflight < best_inflight or (inflight == best_inflight and used < best_used) then
        best, best_inflight, best_used = kid, inflight, used
      end
    end
  end
end

if best == nil then
  if not any_serves then return {0, 'no_keys', 0} end
  if soonest == nil then return {0, 'unavailable', 0} end
  return {0, 'unavailable', soonest - now}
end

local h = prefix .. best
redis.call('HINCRBY', h, 'inflight', 1)
redis.call('HSET', h, 'last_used', now)
local lease = best .. ':' .. ARGV[4]
redis.call('ZADD', KEYS[2], now + ttl, lease)
local secret = redis.call('HGET', h, 'secret') or ''
local org = redis.call('HGET', h, 'organization') or ''
return {1, best, lease, secret, org}
