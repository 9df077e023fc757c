-- Client limits in Redis (serve/limits/mod.rs): a replica renews the leases of its executions
-- in flight (and writes back those that a restarted Redis, or one that was unreachable when
-- they began, lacks).
--
-- KEYS[1]  an entry's in-flight sorted set
-- ARGV[1]  how long a lease lasts from now, in ms; ARGV[2..] the leases

local time = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expires = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return 1
