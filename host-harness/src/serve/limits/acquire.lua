-- Client limits in Redis (serve/limits/mod.rs): checks every limit of one token entry and, when
-- all have room, counts the request and adds its lease, in one atomic step.
--
-- KEYS[1]  requests: hash of second -> requests admitted in that second
-- KEYS[2]  tokens:   hash of second -> tokens of the executions that finished in that second
-- KEYS[3]  in-flight: sorted set of leases (one per execution in flight), scored by expiry (ms)
-- ARGV[1..3]  requestsPerMinute, tokensPerMinute, concurrentRequests (0: no such limit)
-- ARGV[4]  the lease (replica id and sequence number)
-- ARGV[5]  how long a lease lasts unless renewed, in ms
--
-- Returns {1} when admitted, else {0, LIMIT, WAIT_MS}: LIMIT 1, 2 or 3 as ARGV, WAIT_MS until
-- it would have room (the longest wait when several have none). The clock is Redis's, so that
-- every replica counts the same seconds.

local BUCKETS = 61 -- the current second and the 60 before it (serve/limits/window.rs)
local time = redis.call('TIME')
local now = tonumber(time[1])
local now_ms = now * 1000 + math.floor(tonumber(time[2]) / 1000)
local oldest = now - BUCKETS + 1

-- Milliseconds until one more fits under `limit` in the window at `key`, or -1 when it fits
-- now. Removes the buckets that have left the window.
local function wait_ms(key, limit)
  local flat = redis.call('HGETALL', key)
  local live, stale, total = {}, {}, 0
  for i = 1, #flat, 2 do
    local second, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if second < oldest then
      stale[#stale + 1] = flat[i]
    else
      live[#live + 1] = { second, n }
      total = total + n
    end
  end
  if #stale > 0 then
    redis.call('HDEL', key, unpack(stale))
  end
  if total < limit then
    return -1
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  for _, bucket in ipairs(live) do
    total = total - bucket[2]
    if total < limit then
      -- This bucket leaves the window when second `bucket[1] + BUCKETS` begins.
      return math.max((bucket[1] + BUCKETS) * 1000 - now_ms, 1)
    end
  end
  return BUCKETS * 1000
end

local requests = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local concurrent = tonumber(ARGV[3])
local refused, longest = 0, -1
local function over(limit, wait)
  if wait >= 0 and wait > longest then
    refused, longest = limit, wait
  end
end

if requests > 0 then
  over(1, wait_ms(KEYS[1], requests))
end
if tokens > 0 then
  over(2, wait_ms(KEYS[2], tokens))
end
if concurrent > 0 then
  -- Leases of replicas that stopped renewing them have expired.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) >= concurrent then
    -- Nobody knows when an execution ends: a second is a fair first guess.
    over(3, 1000)
  end
end
if refused > 0 then
  return { 0, refused, longest }
end

if requests > 0 then
  redis.call('HINCRBY', KEYS[1], now, 1)
  redis.call('EXPIRE', KEYS[1], 2 * BUCKETS)
end
if concurrent > 0 then
  local ttl = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[3], now_ms + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[3], 2 * ttl)
end
return { 1 }
