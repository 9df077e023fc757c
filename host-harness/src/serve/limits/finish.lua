-- Client limits in Redis (serve/limits/mod.rs): executions that ended, written in one batch.
--
-- KEYS  per execution, in pairs: its entry's in-flight sorted set and tokens hash
-- ARGV[1]  the number of one-second buckets in a window (the tokens hash lives twice as long)
-- ARGV  then per execution, in pairs: its lease ("" when it holds none) and its tokens
--
-- The tokens go into the bucket of Redis's current second (as acquire.lua counts them).

local now = redis.call('TIME')[1]
local ttl = 2 * tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local lease, tokens = ARGV[i + 1], tonumber(ARGV[i + 2])
  if lease ~= '' then
    redis.call('ZREM', KEYS[i], lease)
  end
  if tokens > 0 then
    redis.call('HINCRBY', KEYS[i + 1], now, tokens)
    redis.call('EXPIRE', KEYS[i + 1], ttl)
  end
end
return 1
