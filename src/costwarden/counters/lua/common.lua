-- Helpers prepended to every counter script; each script runs atomically on the server.
--
-- A counter is one hash: 's:<bucket>' / 'r:<bucket>' hold settled spend and reservations per
-- bucket, 'S' / 'R' their totals over the live buckets, 'lo' the oldest live bucket.
-- Money travels as decimal strings and is only added with HINCRBY (exact to 2^63): a Lua number
-- is a double, so the one comparison made here works on 9-digit limbs.

-- Every script gets the generation marker's key as its last key and the marker the caller
-- expects as its last argument; they are taken off here, so each body sees only its own.
local MARK_KEY = table.remove(KEYS)
local MARK = table.remove(ARGV)

-- The error to return when the counters are not those of build MARK, else nil: the marker is
-- missing when the store was emptied (restarted without persistence, flushed, failed over), and
-- different when another replica rebuilt it since this one last looked.
local function refused()
  local current = redis.call('GET', MARK_KEY)
  if not current then
    return redis.error_reply('COSTWARDEN_EMPTIED')
  end
  if current ~= MARK then
    return redis.error_reply('COSTWARDEN_MOVED ' .. current)
  end
  return nil
end

local LIMB = 1000000000
local MARGIN_MS = 3600000 -- keys outlive the moment their data stops mattering by an hour

-- A decimal integer string as (high, low) doubles, both exact, with value = high * LIMB + low.
local function limbs(s)
  local sign = 1
  if string.sub(s, 1, 1) == '-' then
    sign, s = -1, string.sub(s, 2)
  end
  local n = #s
  if n <= 9 then
    return 0, sign * tonumber(s)
  end
  return sign * tonumber(string.sub(s, 1, n - 9)), sign * tonumber(string.sub(s, n - 8))
end

-- Whether the sum of the decimal strings `terms` is greater than the decimal string `limit`.
local function exceeds(terms, limit)
  local high, low = 0, 0
  for _, term in ipairs(terms) do
    local h, l = limbs(term)
    high, low = high + h, low + l
  end
  local h, l = limbs(limit)
  high, low = high - h, low - l
  local carry = math.floor(low / LIMB)
  high, low = high + carry, low - carry * LIMB
  return high > 0 or (high == 0 and low > 0)
end

local function negate(s)
  if s == '0' then
    return s
  end
  if string.sub(s, 1, 1) == '-' then
    return string.sub(s, 2)
  end
  return '-' .. s
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Expiry is garbage collection only: every decision uses the times the caller passes, so a key
-- is kept until MARGIN_MS past the later of `until_ms` and the server's clock, never shortened.
local function keep(key, until_ms, now)
  local target = math.max(tonumber(until_ms), now) + MARGIN_MS
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or now + ttl < target then
    redis.call('PEXPIREAT', key, string.format('%d', target))
  end
end

-- Forget the buckets that left a rolling window whose newest bucket is `bucket`.
local function advance(key, bucket, span)
  local oldest = tonumber(bucket) - tonumber(span) + 1
  if oldest <= tonumber(redis.call('HGET', key, 'lo') or '0') then
    return
  end
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then
    return -- nothing to forget; do not create the key
  end
  for i = 1, #fields, 2 do
    local kind, index = string.match(fields[i], '^([sr]):(-?%d+)$')
    if kind and tonumber(index) < oldest then
      redis.call('HDEL', key, fields[i])
      if fields[i + 1] ~= '0' then
        redis.call('HINCRBY', key, string.upper(kind), negate(fields[i + 1]))
      end
    end
  end
  redis.call('HSET', key, 'lo', string.format('%d', oldest))
end

local function totals(key)
  local values = redis.call('HMGET', key, 'S', 'R')
  return values[1] or '0', values[2] or '0'
end

local function add(key, field, total, amount)
  redis.call('HINCRBY', key, field, amount)
  redis.call('HINCRBY', key, total, amount)
end

-- Replace the hold `held` in `bucket` by settled spend `actual`; returns spent before and after.
-- A bucket that left its rolling window takes nothing: that spend is outside the window already.
local function apply(key, bucket, span, held, actual, until_ms, now)
  advance(key, bucket, span)
  local before = redis.call('HGET', key, 'S') or '0'
  if redis.call('HEXISTS', key, 'r:' .. bucket) == 1 then
    add(key, 's:' .. bucket, 'S', actual)
    add(key, 'r:' .. bucket, 'R', negate(held))
  elseif span == '1' then
    add(key, 's:' .. bucket, 'S', actual) -- a calendar counter that was lost: keep the spend
  else
    return before, before
  end
  keep(key, until_ms, now)
  return before, redis.call('HGET', key, 'S')
end
