-- Helpers prepended to every counter script; each script runs atomically on the server.
--
-- A counter is one hash: 's:<bucket>' / 'r:<bucket>' hold settled spend and reservations per
-- bucket, 'S' / 'R' their totals over the live buckets, 'lo' the oldest live bucket, 'x' the
-- time (epoch ms) the key expires at, when set by these scripts.
-- Money travels as decimal strings and is added exactly on 9-digit limbs (a Lua number is a
-- double), within the 64 bits that HINCRBY allows; the one comparison made here works on limbs too.
-- A counter is read with one HMGET and written with one HSET: each command a script runs costs
-- the server more than the work it does.

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

-- The integer `s` as limbs when Redis would take it as a 64-bit integer (as HINCRBY does: no
-- sign but '-', no leading zero), else nil.
local function int64(s)
  if #s > 20 or not (s == '0' or string.match(s, '^%-?[1-9]%d*$')) then
    return nil
  end
  local high, low = limbs(s)
  local top = high < 0 and 854775808 or 854775807
  local h, l = math.abs(high), math.abs(low)
  if h > 9223372036 or (h == 9223372036 and l > top) then
    return nil
  end
  return high, low
end

-- The decimal string of high * LIMB + low (both exact), as Redis writes an integer; nil past 64 bits.
local function decimal(high, low)
  local carry = math.floor(low / LIMB)
  high, low = high + carry, low - carry * LIMB -- 0 <= low < LIMB
  local sign, top = '', 854775807
  if high < 0 then -- the magnitude, in the same form
    sign, top = '-', 854775808
    if low > 0 then
      high, low = -high - 1, LIMB - low
    else
      high = -high
    end
  end
  if high > 9223372036 or (high == 9223372036 and low > top) then
    return nil
  end
  if high == 0 then
    return sign .. string.format('%d', low)
  end
  return sign .. string.format('%d%09d', high, low)
end

-- a + b for decimal strings, exactly; nil where HINCRBY would fail (an operand or the sum is
-- not a 64-bit integer).
local function plus(a, b)
  local ah, al = int64(a)
  local bh, bl = int64(b)
  if not ah or not bh then
    return nil
  end
  return decimal(ah + bh, al + bl)
end

-- Expiry is garbage collection only: every decision uses the times the caller passes, so a key
-- is kept until at least MARGIN_MS past the later of `until_ms` and the server's clock, never
-- shortened.
local function target_ms(until_ms, now)
  return math.max(tonumber(until_ms), now) + MARGIN_MS
end

-- Keep a flag (a string key) until its target.
local function keep(key, until_ms, now)
  local target = target_ms(until_ms, now)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or now + ttl < target then
    redis.call('PEXPIREAT', key, string.format('%d', target))
  end
end

-- Forget the buckets of `key` older than `oldest`; false when the key does not exist (and is
-- not created).
local function forget(key, oldest)
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then
    return false
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
  return true
end

-- The oldest bucket still in a window whose newest is `bucket`, when forgetting may be due. 'lo'
-- is only ever set to such a bucket when it is above 0 (or above a 'lo' set before), so with
-- an oldest bucket at or below 0 (every calendar window: bucket 0, span 1) there is nothing to
-- forget and nil is returned.
local function due(bucket, span)
  local oldest = tonumber(bucket) - tonumber(span) + 1
  if oldest > 0 then
    return oldest
  end
  return nil
end

-- Forget the buckets that left a rolling window whose newest bucket is `bucket`.
local function advance(key, bucket, span)
  local oldest = due(bucket, span)
  if oldest and oldest > tonumber(redis.call('HGET', key, 'lo') or '0') then
    forget(key, oldest)
  end
end

-- Counter `key` as of `bucket`, after forgetting the buckets that left its window: totals S and
-- R ('0' when absent), the bucket's s and r and the expiry x (nil when absent).
local function read(key, bucket, span)
  local names = {'lo', 'S', 'R', 'x', 's:' .. bucket, 'r:' .. bucket}
  local v = redis.call('HMGET', key, unpack(names))
  local oldest = due(bucket, span)
  if oldest and oldest > tonumber(v[1] or '0') and forget(key, oldest) then
    v = redis.call('HMGET', key, unpack(names))
  end
  return {key = key, bucket = bucket, S = v[2] or '0', R = v[3] or '0', x = v[4] or nil, s = v[5] or nil,
          r = v[6] or nil}
end

local EXPIRY_STEP_MS = 60000 -- a counter's expiry moves in whole minutes, so most writes leave it

-- The expiry (epoch ms, a string) counter c must move to for `until_ms`, or nil when it expires
-- late enough already. 'x' is written with every PEXPIREAT of a counter and in the same script,
-- so when present it is the key's expiry; without it (a key from before, or a flushed field)
-- the server is asked, and a later expiry found there is left alone.
local function expiry(c, until_ms, now)
  local target = target_ms(until_ms, now)
  if c.x and tonumber(c.x) >= target then
    return nil
  end
  target = math.ceil(target / EXPIRY_STEP_MS) * EXPIRY_STEP_MS
  if not c.x then
    local ttl = redis.call('PTTL', c.key)
    if ttl >= 0 and now + ttl >= target then
      return nil
    end
  end
  return string.format('%d', target)
end

-- Add `spend` to the settled spend and `hold` to the reservations (nil: nothing) of counter c's
-- bucket and totals, and keep c until `until_ms`; returns spent and reserved after.
local function add(c, spend, hold, until_ms, now)
  local moves = {}
  if spend then
    moves[#moves + 1] = {'s:' .. c.bucket, c.s or '0', spend}
    moves[#moves + 1] = {'S', c.S, spend}
  end
  if hold then
    moves[#moves + 1] = {'r:' .. c.bucket, c.r or '0', hold}
    moves[#moves + 1] = {'R', c.R, hold}
  end
  local x = expiry(c, until_ms, now)
  local args, after, exact = {}, {S = c.S, R = c.R}, true
  for _, move in ipairs(moves) do
    local value = plus(move[2], move[3])
    exact = exact and value ~= nil
    args[#args + 1] = move[1]
    args[#args + 1] = value
    after[move[1]] = value
  end
  if exact then
    if x then
      args[#args + 1] = 'x'
      args[#args + 1] = x
    end
    if #args > 0 then
      redis.call('HSET', c.key, unpack(args))
    end
  else -- past 64 bits: HINCRBY fails as it always did, before anything is written
    for _, move in ipairs(moves) do
      redis.call('HINCRBY', c.key, move[1], move[3])
    end
    local totals = redis.call('HMGET', c.key, 'S', 'R')
    after.S, after.R = totals[1] or '0', totals[2] or '0'
    if x then
      redis.call('HSET', c.key, 'x', x)
    end
  end
  if x then
    redis.call('PEXPIREAT', c.key, x)
  end
  return after.S, after.R
end

-- Keep counter c until `until_ms` without writing to it; a key that does not exist stays so.
local function keep_counter(c, until_ms, now)
  if not c.x then
    keep(c.key, until_ms, now) -- leaves no 'x', so that a key that does not exist is not created
    return
  end
  local x = expiry(c, until_ms, now)
  if x then
    redis.call('HSET', c.key, 'x', x)
    redis.call('PEXPIREAT', c.key, x)
  end
end

-- Replace the hold `held` in `bucket` by settled spend `actual`; returns spent before and after,
-- and reserved after. A bucket that left its rolling window takes nothing: that spend is outside
-- the window already.
local function apply(key, bucket, span, held, actual, until_ms, now)
  local c = read(key, bucket, span)
  local hold
  if c.r then
    hold = negate(held)
  elseif span ~= '1' then
    return c.S, c.S, c.R
  end -- else a calendar counter that was lost: keep the spend
  local spent, reserved = add(c, actual, hold, until_ms, now)
  return c.S, spent, reserved
end
