-- The store's clock in ms: every time the accounts ledger writes comes from here, never from a gateway.
local function store_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
