-- Count one more refused prompt from an identity; the count is forgotten after a quiet spell.
-- KEYS[1]  the identity's count of refused prompts ({prefix}policy:rejections:{identity})
-- ARGV[1]  how long the count is remembered after the last refusal, in milliseconds
-- Returns the count, this refusal included. The expiry runs on the store's clock, so every process agrees.
local hits = redis.call("INCR", KEYS[1])
redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[1]))
return hits
