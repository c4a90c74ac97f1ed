-- Admit one request, atomically: who is asking (a user token's hash, or nobody), may they
-- ask now (disabled, expired, too many addresses, banned, blocked, over a rate limit), and
-- reserve what the request may spend against the user's quota for its model family.
-- Checking and recording are one step, so concurrent requests of one person can never
-- together pass a limit or spend more than a quota. Every time is the store's (TIME).
--
-- The limiter follows Pico AI Proxy, fixed: going over the minute (hour) limit blocks the
-- caller for the minute (hour) block; every request refused while limited is a strike, and
-- at the ban threshold the caller is banned until an admin lifts it. A request is recorded
-- in the windows only when it is admitted, so a refused request never spends a slot.
-- Anonymous callers share one bucket ("anon"); strikes and bans fall on the address that
-- kept asking, so one abuser's ban does not shut out everyone else.
--
-- KEYS[1]  token hash -> user id            ({prefix}user_tokens)
-- KEYS[2]  banned identities                ({prefix}bans; identity -> "{ms}|{reason}")
-- Chosen at run time, so not in KEYS (same prefix): the user's hash and address set
-- ({prefix}user:{id}, {prefix}user:{id}:ips), the limiter's keys of the bucket and of the
-- caller ({prefix}limit:{identity}:min|hour|image|block|strikes).
-- ARGV[1]  token: sha256 hex of the user token, or "session:{user id}:{generation}" for a session
--          (accounts/sessions.py), or "" for an anonymous caller
-- ARGV[2]  address: the client's address
-- ARGV[3]  family: the request's model family
-- ARGV[4]  reserve: tokens to reserve against the user's quota (prompt estimate + maximum output)
-- ARGV[5]  request: a unique id for this request (its member in the limiter's windows)
-- ARGV[6]  image_per_minute: the extra per-minute limit of an image generation (0: none, or not an image)
-- The rest never change while a gateway runs (its settings), sent as one precomputed tail:
-- ARGV[7]  prefix                                  ({prefix})
-- ARGV[8]  limiter: 1 when the rate limiter is on
-- ARGV[9..11]   per_minute, per_hour, ban_after     the limits for users (0: none / never)
-- ARGV[12..14]  anon_minute, anon_hour, anon_ban_after  the same for anonymous callers (one shared bucket)
-- ARGV[15..16]  minute_block_ms, hour_block_ms      how long going over a limit blocks
-- ARGV[17] max_ips: the default address limit of a user without their own max_ips (0: none)
-- ARGV[18] auto_ban: 1 when a user over the address limit is disabled
-- Money (issue 13; budget_month() from dispatch/month.lua is prepended):
-- ARGV[19] cost_reserve: micro-dollars this request may cost at most (-1: its model has no known price)
-- ARGV[20] default_budget: MONTHLY_BUDGET_USD in micro-dollars (0: no default budget)
-- ARGV[21] tz_offset: seconds BUDGET_TIME_ZONE is ahead of UTC now
-- ARGV[22] hold_ms: how long a cost reservation lives unless renewed (LEASE_TTL_SEC)
-- Chosen at run time: the budget table ({prefix}budgets) and the user's holds ({prefix}user:{id}:holds).
--
-- Returns {"ok", identity, reserved} when admitted (identity: "user:{id}" or "anon"), else one of
--   {"unknown"}                             no user has this token
--   {"revoked"}                             a session whose user is gone or whose sessions were revoked
--   {"disabled", reason}                    an admin disabled the user
--   {"expired", expires_at}                 a temporary user past its end
--   {"ip_limit", disabled}                  a new address past the user's limit (disabled: 1 if it was banned for it)
--   {"banned", identity, since, reason}     banned until an admin lifts it
--   {"limited", retry_ms, limit, window}    over a limit (window: minute | hour | image); retry_ms until it may ask
--   {"quota", quota, used, reserve}         the reservation does not fit the family's quota
--   {"budget", spent, budget, held, reserve, resets_at}  the month's spend + holds + this request's worst case
--                                           is over the user's monthly budget (micro-dollars; resets_at ms)
--   {"unpriced"}                            a user with a budget asked for a model with no known price
-- An admitted user's reply also carries [5] hold (the cost reservation's member, "" for none),
-- [6] the month's spend and [7] its requests so far (for the reply's monthlyCost / monthlyRequests).

local a = {
  token = ARGV[1], address = ARGV[2], family = ARGV[3], reserve = tonumber(ARGV[4]), request = ARGV[5],
  image_per_minute = tonumber(ARGV[6]), prefix = ARGV[7], limiter = ARGV[8] == '1',
  per_minute = tonumber(ARGV[9]), per_hour = tonumber(ARGV[10]), ban_after = tonumber(ARGV[11]),
  anon_minute = tonumber(ARGV[12]), anon_hour = tonumber(ARGV[13]), anon_ban_after = tonumber(ARGV[14]),
  minute_block_ms = tonumber(ARGV[15]), hour_block_ms = tonumber(ARGV[16]),
  max_ips = tonumber(ARGV[17]), auto_ban = ARGV[18] == '1',
}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = a.prefix

local user, uid, special, new_address = nil, nil, false, false
local identity, striker = 'anon', 'ip:' .. a.address
local per_minute, per_hour, ban_after = a.anon_minute, a.anon_hour, a.anon_ban_after

if a.token ~= '' then
  -- sessions (accounts/sessions.py): "session:{id}:{generation}" names its user, found without the token index;
  -- revoked when the user is gone or an admin bumped its session generation after the session was made
  local session_uid, session_gen = string.match(a.token, '^session:(%x+):(%d+)$')
  uid = session_uid or redis.call('HGET', KEYS[1], a.token)
  if not uid then return {'unknown'} end
  user = prefix .. 'user:' .. uid
  local u = redis.call('HMGET', user, 'token_hash', 'type', 'disabled_at', 'disabled_reason', 'expires_at', 'max_ips',
    'session_gen')
  if session_uid and (not u[1] or tonumber(session_gen) < (tonumber(u[7]) or 0)) then return {'revoked'} end
  -- sessions: end
  if not session_uid and u[1] ~= a.token then return {'unknown'} end  -- deleted or rotated, index entry not yet gone
  if u[3] and u[3] ~= '' then return {'disabled', u[4] or ''} end
  local expires = tonumber(u[5]) or 0
  if u[2] == 'temporary' and expires > 0 and expires <= now then return {'expired', expires} end
  special = u[2] == 'special'
  identity, striker = 'user:' .. uid, 'user:' .. uid
  per_minute, per_hour, ban_after = a.per_minute, a.per_hour, a.ban_after
  new_address = not redis.call('ZSCORE', user .. ':ips', a.address)
  if not special and new_address then
    local limit = tonumber(u[6]) or a.max_ips
    if limit > 0 and redis.call('ZCARD', user .. ':ips') >= limit then
      if a.auto_ban then
        redis.call('HSET', user, 'disabled_at', now, 'disabled_reason', 'Too many IP addresses used this token.')
        return {'ip_limit', 1}
      end
      return {'ip_limit', 0}
    end
  end
end

local ban = redis.call('HGET', KEYS[2], striker)
if ban then
  local since, reason = string.match(ban, '^(%d*)|(.*)$')
  return {'banned', striker, tonumber(since) or 0, reason or ''}
end

local function limit_key(who, what) return prefix .. 'limit:' .. who .. ':' .. what end

-- A refused request: one more strike, and at the threshold, a ban.
local function refuse(retry_ms, limit, window)
  local strikes = redis.call('INCR', limit_key(striker, 'strikes'))
  if ban_after > 0 and strikes >= ban_after then
    local reason = 'Kept sending requests while rate-limited (' .. strikes .. ' refused).'
    redis.call('HSET', KEYS[2], striker, now .. '|' .. reason)
    redis.call('DEL', limit_key(striker, 'strikes'))
    return {'banned', striker, now, reason}
  end
  return {'limited', retry_ms, limit, window}
end

local windows = {}
if a.limiter and not special then
  local block = limit_key(identity, 'block')
  local left = redis.call('PTTL', block)
  if left > 0 then
    local window, limit = string.match(redis.call('GET', block) or '', '^(%a+)|(%d+)$')
    return refuse(left, tonumber(limit) or 0, window or 'minute')
  end
  -- {key, span ms, limit, window name, block ms}
  windows = {
    {limit_key(identity, 'min'), 60000, per_minute, 'minute', a.minute_block_ms},
    {limit_key(identity, 'hour'), 3600000, per_hour, 'hour', a.hour_block_ms},
  }
  if a.image_per_minute > 0 then windows[3] = {limit_key(identity, 'image'), 60000, a.image_per_minute, 'image', 0} end
  for _, w in ipairs(windows) do
    redis.call('ZREMRANGEBYSCORE', w[1], '-inf', now - w[2])
    if w[3] > 0 and redis.call('ZCARD', w[1]) >= w[3] then
      if w[5] > 0 then
        redis.call('SET', block, w[4] .. '|' .. w[3], 'PX', w[5])
        return refuse(w[5], w[3], w[4])
      end
      -- No block: it may ask again once the oldest request leaves the window.
      local oldest = tonumber(redis.call('ZRANGE', w[1], 0, 0, 'WITHSCORES')[2]) or now
      return refuse(math.max(oldest + w[2] - now, 1), w[3], w[4])
    end
  end
end

local reserved = 0
local money = nil
if user then
  local quota_field, used_field = 'quota:' .. a.family, 'used:' .. a.family
  local q = redis.call('HMGET', user, quota_field, used_field)
  local quota, used = tonumber(q[1]) or 0, tonumber(q[2]) or 0
  if not special and quota > 0 and used + a.reserve > quota then return {'quota', quota, used, a.reserve} end
  -- >>> money: the monthly budget, checked and reserved in this same step (issue 13) >>>
  money = {reserve = tonumber(ARGV[19]) or 0, hold_ms = tonumber(ARGV[22]) or 60000, hold = ''}
  money.month, money.resets_at = budget_month(now, tonumber(ARGV[21]) or 0)
  money.holds = user .. ':holds'
  local figures = redis.call('HMGET', user, 'cost:' .. money.month, 'requests:' .. money.month, 'email')
  money.spent, money.requests = tonumber(figures[1]) or 0, tonumber(figures[2]) or 0
  -- The budget: the user's own, their email's, their domain's, everyone's ('*'), else the default.
  local email = figures[3] or ''
  local domain = string.match(email, '(@.+)$') or ''
  local found = redis.call('HMGET', prefix .. 'budgets', 'user:' .. uid, email ~= '' and email or '-',
                           domain ~= '' and domain or '-', '*')
  local budget = tonumber(ARGV[20]) or 0  -- 0: no budget (as a quota of 0 is none)
  for i = 1, 4 do
    if found[i] then budget = tonumber(found[i]) or budget; break end
  end
  if not special and budget > 0 then
    if money.reserve < 0 then return {'unpriced'} end
    -- Holds of processes that died expire (store clock): what they reserved is free again.
    redis.call('ZREMRANGEBYSCORE', money.holds, '-inf', now)
    local held = 0
    for _, member in ipairs(redis.call('ZRANGE', money.holds, 0, -1)) do
      held = held + (tonumber(string.match(member, '|(%d+)$')) or 0)
    end
    if money.spent + held + money.reserve > budget then
      return {'budget', money.spent, budget, held, money.reserve, money.resets_at}
    end
    if money.reserve > 0 then
      money.hold = a.request .. '|' .. money.reserve
      redis.call('ZADD', money.holds, now + money.hold_ms, money.hold)
      redis.call('PEXPIRE', money.holds, money.hold_ms * 2)
    end
  end
  -- <<< money <<<
  reserved = a.reserve
  redis.call('HINCRBY', user, used_field, reserved)
  redis.call('HSET', user, 'last_used_at', now)
  if new_address then redis.call('ZADD', user .. ':ips', now, a.address) end
end

for _, w in ipairs(windows) do
  if w[3] > 0 then
    redis.call('ZADD', w[1], now, a.request)
    redis.call('PEXPIRE', w[1], w[2])
  end
end
if money then return {'ok', identity, reserved, special and 1 or 0, money.hold, money.spent, money.requests} end
return {'ok', identity, reserved, special and 1 or 0}
