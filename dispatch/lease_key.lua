-- Lease the best key of a provider for a model family, atomically; the fast path and
-- the head of the family's queue both come through here, so claiming the head of the
-- queue and leasing a key are one step. Prepended with candidates.lua (store_now, file_key).
--
-- Housekeeping first: leases whose holder stopped renewing them (a crashed process)
-- are given back, and tickets at the head of the queue whose process stopped
-- renewing them are dropped, so neither can hold capacity or the head for ever.
-- Every time is the store's (TIME): no gateway's clock is compared with another's.
--
-- The candidates are the heads of two sorted sets (keys serving every family, keys
-- serving this one), each ordered by requests in flight, then last use; resting keys
-- whose time has come are brought back first. So a lease costs O(log N), whatever the
-- pool's size. A key may be leased when it is filed ready (active, not paced) and is
-- under KEY_CONCURRENCY.
--
-- KEYS[1]  the lease expiry set              ({prefix}leases)
-- KEYS[2]  the family's queue                ({prefix}queue:{family}; ticket -> fair-order score)
-- KEYS[3]  ticket expiry set                 ({prefix}tickets; ticket -> expiry ms)
-- KEYS[4]  the family's recent dispatches    ({prefix}served:{family}; list of ms)
-- KEYS[5]  the family's recent queue waits   ({prefix}waits:{family}; list of "ms:wait_ms")
-- KEYS[6]  families with a queue             ({prefix}queued)
-- KEYS[7]  the family's virtual time         ({prefix}vtime:{family}; score of the last dispatched ticket)
-- KEYS[8]  ready keys serving every family   ({prefix}ready:{provider}:*)
-- KEYS[9]  ready keys serving this family    ({prefix}ready:{provider}:{family})
-- KEYS[10] resting keys, every family        ({prefix}resting:{provider}:*)
-- KEYS[11] resting keys, this family         ({prefix}resting:{provider}:{family})
-- Chosen at run time, so not in KEYS (same prefix): the key hashes ({prefix}key:{id}) of the
-- leased key and of keys whose lease expired or whose rest ended, the other candidate sets
-- those keys are filed in, and a dropped ticket's waiting counter ({prefix}waiting:{identity}).
-- ARGV[1]  prefix                            ({prefix})
-- ARGV[2]  model family
-- ARGV[3]  lease TTL, ms
-- ARGV[4]  lease nonce (unique per lease)
-- ARGV[5]  the caller's ticket ("" on the fast path)
-- ARGV[6]  most requests in flight per key (0: no limit)
-- ARGV[7]  waiting-counter prefix            ({prefix}waiting:)
-- ARGV[8]  wake channel                      ({prefix}wake)
--
-- Returns {1, key_id, lease_id, secret, organization, now} on success, else {0, reason, n, extra, now}
-- (now: the store's clock, ms, which stamps a request's arrival):
--   "no_keys"      nothing can serve this family at all (n = 0)
--   "unavailable"  keys exist, none may be used now; n = ms until the first comes back (0: unknown)
--   "queued"       (fast path) others are waiting: join the queue behind them
--   "behind"       (ticket) not at the head yet; n = position (0-based), then (for position 1)
--                  ms until the head's ticket expires unless renewed
--   "gone"         (ticket) the ticket is no longer queued (it expired)

local now = store_now()
local prefix = ARGV[1]
local family = ARGV[2]
local ttl = tonumber(ARGV[3])
local ticket = ARGV[5]
local max_inflight = tonumber(ARGV[6])

for _, lease in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local kid = string.match(lease, '^([^:]+):')
  if kid and redis.call('EXISTS', prefix .. 'key:' .. kid) == 1 then
    local left = redis.call('HINCRBY', prefix .. 'key:' .. kid, 'inflight', -1)
    if left < 0 then redis.call('HSET', prefix .. 'key:' .. kid, 'inflight', 0) end
    file_key(prefix, kid, now)
  end
  redis.call('ZREM', KEYS[1], lease)
end

-- Tickets are "{enqueued ms}|{id}|{identity}".
local function forget_ticket(t)
  redis.call('ZREM', KEYS[2], t)
  redis.call('ZREM', KEYS[3], t)
  local identity = string.match(t, '^[^|]*|[^|]*|(.*)$')
  if identity then
    local w = redis.call('DECR', ARGV[7] .. identity)
    if w <= 0 then redis.call('DEL', ARGV[7] .. identity) end
  end
end

local purged = false
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not head then break end
  local alive = tonumber(redis.call('ZSCORE', KEYS[3], head))
  if alive and alive >= now then break end
  forget_ticket(head)
  purged = true
end
local waiting = redis.call('ZCARD', KEYS[2])
if waiting == 0 then redis.call('SREM', KEYS[6], family) end

-- Whoever purged a dead head wakes the new one: nobody else will (no key is released).
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if purged and head and head ~= ticket then redis.call('PUBLISH', ARGV[8], head) end
if ticket == '' then
  if waiting > 0 then return {0, 'queued', 0, 0, now} end
else
  local rank = redis.call('ZRANK', KEYS[2], ticket)
  if not rank then return {0, 'gone', 0, 0, now} end
  if rank > 0 then
    -- The next in line also tries when the head's ticket would expire, should its process have died.
    local head_left = 0
    if rank == 1 then head_left = math.max((tonumber(redis.call('ZSCORE', KEYS[3], head)) or now) - now, 0) + 1 end
    return {0, 'behind', rank, head_left, now}
  end
end

bring_back(prefix, KEYS[10], now)
bring_back(prefix, KEYS[11], now)

local function first(set)
  local r = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  return r[1], tonumber(r[2])
end

local best, best_score = nil, nil
for _ = 1, 100 do  -- bounded: each pass either leases or corrects a stale entry
  local a, a_score = first(KEYS[8])
  local b, b_score = first(KEYS[9])
  local kid, score, set = a, a_score, KEYS[8]
  if b and (not a or b_score < a_score) then kid, score, set = b, b_score, KEYS[9] end
  if not kid then break end
  if redis.call('HGET', prefix .. 'key:' .. kid, 'status') == 'active' then
    best, best_score = kid, score
    break
  end
  if file_key(prefix, kid, now) == 'out' then redis.call('ZREM', set, kid) end  -- filed before a change
end

if best ~= nil and max_inflight > 0 and math.floor(best_score / 1e13) >= max_inflight then
  best = nil  -- the least busy key is full, so every key is
end

if best == nil then
  local filed = redis.call('ZCARD', KEYS[8]) + redis.call('ZCARD', KEYS[9])
    + redis.call('ZCARD', KEYS[10]) + redis.call('ZCARD', KEYS[11])
  if filed == 0 then return {0, 'no_keys', 0, 0, now} end
  local soonest = nil
  for _, set in ipairs({KEYS[10], KEYS[11]}) do
    local _, at = first(set)
    if at and (soonest == nil or at < soonest) then soonest = at end
  end
  if soonest == nil or soonest >= FULL then return {0, 'unavailable', 0, 0, now} end
  return {0, 'unavailable', math.max(soonest - now, 1), 0, now}
end

local h = prefix .. 'key:' .. best
redis.call('HINCRBY', h, 'inflight', 1)
redis.call('HSET', h, 'last_used', now)
file_key(prefix, best, now)
local lease = best .. ':' .. ARGV[4]
redis.call('ZADD', KEYS[1], now + ttl, lease)
redis.call('LPUSH', KEYS[4], now)
redis.call('LTRIM', KEYS[4], 0, 999)

if ticket ~= '' then
  local enqueued = tonumber(string.match(ticket, '^(%d+)|')) or now
  redis.call('SET', KEYS[7], redis.call('ZSCORE', KEYS[2], ticket))
  forget_ticket(ticket)
  redis.call('LPUSH', KEYS[5], now .. ':' .. math.max(now - enqueued, 0))
  redis.call('LTRIM', KEYS[5], 0, 49)
  local next_head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if next_head then
    redis.call('PUBLISH', ARGV[8], next_head)  -- perhaps another key is free: the next in line tries
  else
    redis.call('SREM', KEYS[6], family)
  end
end

local secret = redis.call('HGET', h, 'secret') or ''
local org = redis.call('HGET', h, 'organization') or ''
return {1, best, lease, secret, org, now}
