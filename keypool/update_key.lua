-- Change a key's record (add, change, or forget it) and re-file it in the candidate sets,
-- atomically: the one way an operator, the configuration or a key check changes a key
-- outside traffic. Prepended with candidates.lua (store_now, file_key, unfile_key).
--
-- KEYS[1]  the key's hash                    ({prefix}key:{id})
-- KEYS[2]  the provider's key set            ({prefix}keys:{provider})
-- Chosen at run time, so not in KEYS (same prefix): the candidate sets the key is filed in.
-- ARGV[1]  one JSON object:
--   prefix          {prefix}
--   id              the key's id
--   new_only        true: do nothing when the key exists already
--   forget          true: remove the key altogether
--   set             fields to set ({} for none)
--   set_if_missing  fields to set only where the key has none yet ({} for none); `added_at` is
--                   always stamped on a new key, from the store's clock
--
-- Returns where the key is filed now ('ready', 'resting', 'out'), or false when new_only and it exists.

local a = cjson.decode(ARGV[1])
local now = store_now()
if a.forget then
  unfile_key(a.prefix, a.id)
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], a.id)
  return 'out'
end
if a.new_only and redis.call('EXISTS', KEYS[1]) == 1 then return false end
for field, value in pairs(a.set_if_missing) do redis.call('HSETNX', KEYS[1], field, value) end
redis.call('HSETNX', KEYS[1], 'added_at', now)
for field, value in pairs(a.set) do redis.call('HSET', KEYS[1], field, value) end
redis.call('SADD', KEYS[2], a.id)
return file_key(a.prefix, a.id, now)
