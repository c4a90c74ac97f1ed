-- The budget month of a store time, shared by admission (accounts/admit.lua: the budget check) and
-- settlement (settle_lease.lua: the month a cost is counted in), so the two never disagree on it.
-- Prepended to both scripts. Months turn at midnight on the 1st in a zone `offset_sec` ahead of
-- UTC (BUDGET_TIME_ZONE's offset now, sent by the gateway); the time itself is the store's.
-- Calendar arithmetic: H. Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).

-- Returns "YYYY-MM" and when the next month begins (ms since the epoch).
local function budget_month(now_ms, offset_sec)
  local days = math.floor((now_ms / 1000 + offset_sec) / 86400)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  if nm <= 2 then ny = ny - 1 end
  local nera = math.floor(ny / 400)
  local nyoe = ny - nera * 400
  local ndoy = math.floor((153 * (nm > 2 and nm - 3 or nm + 9) + 2) / 5)
  local next_days = nera * 146097 + nyoe * 365 + math.floor(nyoe / 4) - math.floor(nyoe / 100) + ndoy - 719468
  return string.format('%04d-%02d', y, m), (next_days * 86400 - offset_sec) * 1000
end
