-- Helpers prepended to every counter script; each script runs atomically on the server.
--
-- A counter is one hash: 's:<bucket>' / 'r:<bucket>' hold settled spend and reservations per
-- bucket, 'S' / 'R' their totals over the live buckets, 'lo' the oldest live bucket, 'x' the
-- moment (epoch ms) the key expires, once these scripts set it.
-- Money travels as decimal strings and is only added with HINCRBY (exact to 2^63): a Lua number
-- is a double, so the one comparison made here works on 9-digit limbs unless every figure is
-- small enough for a double to hold the sum exactly.
-- Each command a script runs costs the server more than its own work, and so does Lua's own
-- work: a counter is read with one HMGET, and figures are only parsed where compared. A decimal
-- string is parsed by arithmetic (`s + 0`), which reads it once where `tonumber` reads it twice,
-- and without a call.

-- Every script gets the generation marker's key as its last key and the marker the caller
-- expects as its last argument; they are taken off here, so each body sees only its own.
local MARK_KEY, MARK = KEYS[#KEYS], ARGV[#ARGV]
KEYS[#KEYS], ARGV[#ARGV] = nil, nil

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
    return 0, sign * s
  end
  return sign * string.sub(s, 1, n - 9), sign * string.sub(s, n - 8)
end

local EXACT_DIGITS = 15 -- a figure of at most 15 characters is below 10^15: three sum to under 2^53

-- Adds the decimal string `term` (when given) to the limbs `high`, `low`.
local function add_limbs(high, low, term)
  if not term then
    return high, low
  end
  local h, l = limbs(term)
  return high + h, low + l
end

-- Whether the decimal string `limit` is exceeded by the sum of the decimal strings `a`, `b`
-- and `c` (`b` and `c` may be nil: no term). Lengths settle most checks without parsing a
-- figure: terms of at most d characters are each below 10^d, so three sum to below 10^(d+1),
-- the least limit of d+2 digits.
local function exceeded(limit, a, b, c)
  local longest = #a
  if b and #b > longest then
    longest = #b
  end
  if c and #c > longest then
    longest = #c
  end
  local first = string.byte(limit)
  if #limit >= longest + 2 and first ~= 45 and first ~= 48 then -- neither '-' nor '0'
    return false
  end
  if longest <= EXACT_DIGITS and #limit <= EXACT_DIGITS then -- every sum is exact as a double
    local sum = a + 0
    if b then
      sum = sum + b
    end
    if c then
      sum = sum + c
    end
    return sum > limit + 0
  end
  local high, low = add_limbs(0, 0, a)
  high, low = add_limbs(high, low, b)
  high, low = add_limbs(high, low, c)
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
  local us = t[2] + 0
  return t[1] * 1000 + (us - us % 1000) / 1000
end

-- MARGIN_MS past the later of `until_ms` (a decimal string) and `now`.
local function kept_until(until_ms, now)
  local at = until_ms + 0
  if at < now then
    at = now
  end
  return at + MARGIN_MS
end

-- Expiry is garbage collection only: every decision uses the times the caller passes, so a key
-- is kept until at least MARGIN_MS past the later of `until_ms` and the server's clock, never
-- shortened. A flag (a string key) asks the server for its expiry each time.
local function keep(key, until_ms, now)
  local target = kept_until(until_ms, now)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or now + ttl < target then
    redis.call('PEXPIREAT', key, string.format('%d', target))
  end
end

local EXPIRY_STEP_MS = 60000 -- a counter's expiry moves in whole minutes, so most writes leave it
local kept = {} -- counter key -> the expiry this script gave it ('x' read before that is stale)

-- Keep a counter, whose 'x' field read `x`, until its target. 'x' is written with each
-- PEXPIREAT of a counter, in the same script, so it is the key's expiry when present and the
-- server need not be asked. Without it (a hash written before 'x' existed) the server is asked;
-- a later expiry found there is kept, and a key that does not exist is not created.
local function keep_counter(key, x, until_ms, now)
  x = kept[key] or x
  local target = kept_until(until_ms, now)
  if x and x + 0 >= target then
    return
  end
  if not x then
    local ttl = redis.call('PTTL', key)
    if ttl == -2 or (ttl >= 0 and now + ttl >= target) then
      return
    end
  end
  local at = string.format('%d', math.ceil(target / EXPIRY_STEP_MS) * EXPIRY_STEP_MS)
  redis.call('HSET', key, 'x', at)
  redis.call('PEXPIREAT', key, at)
  kept[key] = at
end

-- Forget the buckets of `key` before `oldest`; false when the key does not exist (it is not
-- created).
local function forget(key, oldest)
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then
    return false
  end
  for i = 1, #fields, 2 do
    local kind, index = string.match(fields[i], '^([sr]):(-?%d+)$')
    if kind and index + 0 < oldest then
      redis.call('HDEL', key, fields[i])
      if fields[i + 1] ~= '0' then
        redis.call('HINCRBY', key, string.upper(kind), negate(fields[i + 1]))
      end
    end
  end
  redis.call('HSET', key, 'lo', string.format('%d', oldest))
  return true
end

-- 'lo' is only ever set to an oldest bucket above the 'lo' before it (0 when absent), so it is
-- absent or above 0: a window whose oldest bucket is at or below 0 has nothing to forget. That
-- is every calendar window (bucket 0, span 1), whose 'lo' need not be read.

-- Forget the buckets that left a rolling window whose newest bucket is `bucket`.
local function advance(key, bucket, span)
  local oldest = bucket - span + 1
  if oldest > 0 and oldest > (redis.call('HGET', key, 'lo') or '0') + 0 then
    forget(key, oldest)
  end
end

-- Counter `key` as of `bucket`, after forgetting the buckets that left its window: spent and
-- reserved totals ('0' when absent), then 'x' and the value of each further field asked for
-- (false when absent), all in one HMGET.
local function read(key, bucket, span, ...)
  local oldest = 0 -- a calendar window's, without parsing its figures
  if span ~= '1' or bucket ~= '0' then
    oldest = bucket - span + 1
  end
  local v
  if oldest <= 0 then
    v = redis.call('HMGET', key, 'S', 'R', 'x', ...)
    return v[1] or '0', v[2] or '0', v[3], v[4]
  end
  v = redis.call('HMGET', key, 'lo', 'S', 'R', 'x', ...)
  if (not v[1] or oldest > v[1] + 0) and forget(key, oldest) then -- an absent 'lo' reads as 0
    v = redis.call('HMGET', key, 'lo', 'S', 'R', 'x', ...)
  end
  return v[2] or '0', v[3] or '0', v[4], v[5]
end

-- Add `amount` to `field` and to its `total`; returns the total's new value as HINCRBY answers
-- it, a Lua number (see `figure`).
local function add(key, field, total, amount)
  redis.call('HINCRBY', key, field, amount)
  return redis.call('HINCRBY', key, total, amount)
end

local EXACT = 2 ^ 53 -- an integer's double is below this in magnitude only when it is the integer

-- HINCRBY's answer reaches Lua as a double: `n` when that is the integer itself, else nil (the
-- caller reads the figure as a decimal string instead).
local function figure(n)
  if n < EXACT and n > -EXACT then
    return n
  end
  return nil
end

-- Replace the hold `held` in `bucket` by settled spend `actual`; returns spent before (a decimal
-- string) and after, and reserved after (each a decimal string, or a number that is the figure
-- exactly: HINCRBY's answer, when below 2^53). A bucket that left its rolling window takes
-- nothing: that spend is outside the window already.
local function apply(key, bucket, span, held, actual, until_ms, now)
  local field = 'r:' .. bucket
  local before, reserved, x, hold = read(key, bucket, span, field)
  local after
  if hold then
    after = figure(add(key, 's:' .. bucket, 'S', actual))
    reserved = figure(add(key, field, 'R', negate(held)))
  elseif span == '1' then
    after = figure(add(key, 's:' .. bucket, 'S', actual)) -- a calendar counter that was lost: keep the spend
  else
    return before, before, reserved
  end
  keep_counter(key, x, until_ms, now)
  if not (after and reserved) then -- past 2^53: read as decimal strings
    local v = redis.call('HMGET', key, 'S', 'R')
    return before, v[1], v[2] or '0'
  end
  return before, after, reserved
end
