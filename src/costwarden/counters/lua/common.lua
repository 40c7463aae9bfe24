-- Helpers of every counter operation: made once when the library of operations loads (Redis 7,
-- `FUNCTION LOAD`), or on a server without functions at each run of a script, which is this file
-- followed by the operation's. Each operation runs atomically on the server.
--
-- A counter is one hash: 'S' / 'R' hold its settled spend and reservations over the live buckets
-- of its window; 'h' names its head, the newest bucket written, whose own figures are those totals
-- less the other live buckets' 's:<bucket>' / 'r:<bucket>' (fields under the head's own name are
-- stale: a counter written before heads had them; they are ignored, and overwritten when the head
-- moves on). So writing to the head adds to a total alone: one HINCRBY a figure, where a bucket
-- of its own took two. The head moves when a newer bucket is read or written: the old head's
-- figures are written out then, and the buckets that left the window forgotten, once a bucket
-- rather than once a call. A calendar counter (bucket '0', span '1') has one bucket, always its
-- head: totals alone, and no 'h'. 'x' is the moment (epoch ms) the key expires, once these
-- scripts set it.
-- Money travels as decimal strings and is only added with HINCRBY (exact to 2^63): a Lua number
-- is a double, so the comparisons made here work on 9-digit limbs unless every figure is small
-- enough for a double to hold the sum exactly, and the rare figure computed here (a head's, when
-- it moves on) is written from limbs.
-- Each command a script runs costs the server more than its own work, and so does Lua's own
-- work: a counter is read with one HMGET, and figures are only parsed where compared. A decimal
-- string is parsed by arithmetic (`s + 0`), which reads it once where `tonumber` reads it twice,
-- and without a call.

-- redis.call, string.byte and string.sub: found once a call rather than at each use (a library is
-- loaded without them, so not once for good)
local call, byte, sub

local MARK_KEY, MARK -- the generation marker's key, and the marker the caller expects
local clock -- the server's clock (epoch ms), asked at most once a call, when an expiry moves (`now_ms`)
local heads -- counter key -> its head as this call last read or wrote it (false: none)
local kept -- counter key -> the expiry this call gave it ('x' read before that is stale); nil: none

-- Every call gets the generation marker's key as its last key and the marker the caller expects
-- as its last argument; they are taken off here, so each body sees only its own. Each call starts
-- its own state: helpers live as long as the library, their state one call.
local function begin(KEYS, ARGV)
  local k, a = #KEYS, #ARGV
  MARK_KEY, MARK = KEYS[k], ARGV[a]
  KEYS[k], ARGV[a] = nil, nil
  clock, heads, kept = nil, {}, nil
  call, byte, sub = redis.call, string.byte, string.sub
end

-- The error to return when the counters are not those of build MARK, else nil: the marker is
-- missing when the store was emptied (restarted without persistence, flushed, failed over), and
-- different when another replica rebuilt it since this one last looked.
local function refused()
  local current = call('GET', MARK_KEY)
  if not current then
    return redis.error_reply('COSTWARDEN_EMPTIED')
  end
  if current ~= MARK then
    return redis.error_reply('COSTWARDEN_MOVED ' .. current)
  end
  return nil
end

-- `operation` as an operation on the counters of build MARK: the call begun, then refused
-- (`refused`'s error returned) when the counters are not that build's.
local function checked(operation)
  return function(KEYS, ARGV)
    begin(KEYS, ARGV)
    local no = refused()
    if no then
      return no
    end
    return operation(KEYS, ARGV)
  end
end

local LIMB = 1000000000
local MARGIN_MS = 3600000 -- keys outlive the moment their data stops mattering by an hour

local EXACT_DIGITS = 15 -- a figure of at most 15 characters is below 10^15: three sum to under 2^53


-- Helpers only rare paths call: figures past what a double holds, a head moving on, an expiry
-- moving. Run as a script, each `local function` is a closure made anew at every run, called or
-- not, so these are made into `slow` by `rare()`, which a path calls before it needs one of them
-- (and which returns them): a table is one upvalue of the closures that use it, where each local
-- function would be one more. In the library they are made once, at their first use.
local slow = {}
local function rare()
  if slow.limbs then
    return slow
  end

  -- A decimal integer string as (high, low) doubles, both exact, with value = high * LIMB + low.
  function slow.limbs(s)
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

  -- Adds the decimal string `term` (when given) to the limbs `high`, `low`.
  function slow.add_limbs(high, low, term)
    if not term then
      return high, low
    end
    local h, l = slow.limbs(term)
    return high + h, low + l
  end

  -- The decimal string of high * LIMB + low (doubles holding integers exactly).
  function slow.decimal(high, low)
    local carry = math.floor(low / LIMB)
    high, low = high + carry, low - carry * LIMB -- 0 <= low < LIMB
    if high < 0 and low > 0 then -- the same sign as high: -LIMB < low <= 0
      high, low = high + 1, low - LIMB
    end
    if high == 0 then
      return string.format('%d', low)
    end
    return string.format('%d%09d', high, low < 0 and -low or low)
  end

  -- The decimal string of `a` - `b` (decimal strings).
  function slow.difference(a, b)
    local ah, al = slow.limbs(a)
    local bh, bl = slow.limbs(b)
    return slow.decimal(ah - bh, al - bl)
  end

  function slow.now_ms()
    if not clock then
      local t = call('TIME')
      local us = t[2] + 0
      clock = t[1] * 1000 + (us - us % 1000) / 1000
    end
    return clock
  end

  -- MARGIN_MS past the later of `until_ms` (a decimal string or a number) and the server's clock.
  function slow.kept_until(until_ms)
    local at = until_ms + 0
    local now = slow.now_ms()
    if at < now then
      at = now
    end
    return at + MARGIN_MS
  end

  -- Make `bucket` the head of counter `key`, whose head was `h` (nil: none, a counter written before
  -- heads, whose totals are the sum of its buckets' own figures): write out the old head's figures
  -- (its totals less the other buckets') when it stays in the window whose oldest bucket is
  -- `oldest`, and forget the buckets before that. False when the key does not exist (it is not
  -- created).
  function slow.move(key, h, bucket, oldest)
    local fields = call('HGETALL', key)
    if #fields == 0 then
      return false
    end
    local spent, reserved = '0', '0'
    -- limbs of the other buckets' figures: live ones, and those that left the window
    local ls, lsl, lr, lrl, gs, gsl, gr, grl = 0, 0, 0, 0, 0, 0, 0, 0
    local gone = {}
    for i = 1, #fields, 2 do
      local name, value = fields[i], fields[i + 1]
      if name == 'S' then
        spent = value
      elseif name == 'R' then
        reserved = value
      elseif name == 'lo' then -- the oldest live bucket, as counters written before heads kept it
        gone[#gone + 1] = name
      else
        local kind, index = string.match(name, '^([sr]):(-?%d+)$')
        if kind then
          local high, low = slow.limbs(value)
          if index == h or index + 0 < oldest then
            gone[#gone + 1] = name
            if index == h then -- a stale figure of the head: not counted
            elseif kind == 's' then
              gs, gsl = gs + high, gsl + low
            else
              gr, grl = gr + high, grl + low
            end
          elseif kind == 's' then
            ls, lsl = ls + high, lsl + low
          else
            lr, lrl = lr + high, lrl + low
          end
        end
      end
    end
    local sh, sl = slow.limbs(spent)
    local rh, rl = slow.limbs(reserved)
    local set = {'h', bucket}
    if h and h + 0 >= oldest then -- the old head stays, as a bucket of its own; the totals lose what left
      set[3], set[4] = 's:' .. h, slow.decimal(sh - ls - gs, sl - lsl - gsl)
      set[5], set[6] = 'r:' .. h, slow.decimal(rh - lr - gr, rl - lrl - grl)
      set[7], set[8] = 'S', slow.decimal(sh - gs, sl - gsl)
      set[9], set[10] = 'R', slow.decimal(rh - gr, rl - grl)
    elseif h then -- the old head left too: the totals are the live buckets'
      set[3], set[4] = 'S', slow.decimal(ls, lsl)
      set[5], set[6] = 'R', slow.decimal(lr, lrl)
    else
      set[3], set[4] = 'S', slow.decimal(sh - gs, sl - gsl)
      set[5], set[6] = 'R', slow.decimal(rh - gr, rl - grl)
    end
    if #gone > 0 then
      call('HDEL', key, unpack(gone))
    end
    call('HSET', key, unpack(set))
    return true
  end
  return slow
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
  local first = byte(limit)
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
  local slow = rare()
  local high, low = slow.add_limbs(0, 0, a)
  high, low = slow.add_limbs(high, low, b)
  high, low = slow.add_limbs(high, low, c)
  local h, l = slow.limbs(limit)
  high, low = high - h, low - l
  local carry = math.floor(low / LIMB)
  high, low = high + carry, low - carry * LIMB
  return high > 0 or (high == 0 and low > 0)
end

local function negate(s)
  if s == '0' then
    return s
  end
  if byte(s) == 45 then -- '-'
    return sub(s, 2)
  end
  return '-' .. s
end

-- Expiry is garbage collection only: every decision uses the times the caller passes, so a key
-- is kept until at least MARGIN_MS past the later of `until_ms` and the server's clock, never
-- shortened. A flag (a string key) asks the server for its expiry each time.
local function keep(key, until_ms)
  local slow = rare()
  local target = slow.kept_until(until_ms)
  local ttl = call('PTTL', key)
  if ttl < 0 or slow.now_ms() + ttl < target then
    call('PEXPIREAT', key, string.format('%d', target))
  end
end

-- The numbers of a comma-separated list, in order (the keep-until ms of a call's holds).
local function numbers(list)
  local found, n = {}, 0
  for figure in string.gmatch(list, '[^,]+') do
    n = n + 1
    found[n] = figure + 0
  end
  return found
end

-- The later of `until_ms` (a decimal string or a number) and `deadline` (a number), as a number: a
-- counter is kept for its window and for the open reservations held in it.
local function later(until_ms, deadline)
  local at = until_ms + 0
  if at < deadline then
    return deadline
  end
  return at
end

local EXPIRY_STEP_MS = 60000 -- a counter's expiry moves in whole minutes, so most writes leave it

-- Keep a counter, whose 'x' field read `x`, until MARGIN_MS past `until_ms` (and past the
-- server's clock when the expiry moves: a key that exists has not reached its expiry, so one
-- kept MARGIN_MS past `until_ms` already is left alone without asking the clock). 'x' is written
-- with each PEXPIREAT of a counter, in the same script, so it is the key's expiry when present and
-- the server need not be asked. Without it (a hash written before 'x' existed) the server is
-- asked; a later expiry found there is kept, and a key that does not exist is not created.
local function keep_counter(key, x, until_ms)
  if kept then
    x = kept[key] or x
  end
  if x and x + 0 >= until_ms + MARGIN_MS then
    return
  end
  local slow = rare()
  local target = slow.kept_until(until_ms)
  if x and x + 0 >= target then
    return
  end
  if not x then
    local ttl = call('PTTL', key)
    if ttl == -2 or (ttl >= 0 and slow.now_ms() + ttl >= target) then
      return
    end
  end
  local at = string.format('%d', math.ceil(target / EXPIRY_STEP_MS) * EXPIRY_STEP_MS)
  call('HSET', key, 'x', at)
  call('PEXPIREAT', key, at)
  if not kept then
    kept = {}
  end
  kept[key] = at
end

local CALENDAR = '0' -- a calendar window's bucket (its span is '1'): the counter's only one


-- Counter `key` as of `bucket` (its window `span` buckets long), the head moved there first when
-- it is newer, in one HMGET: settled spend and reserved totals ('0' when absent), then with
-- `expiry` its 'x' (nil when absent), and whether the counter exists.
local function read(key, bucket, span, expiry)
  local v
  if bucket == CALENDAR and span == '1' then
    if expiry then
      v = call('HMGET', key, 'S', 'R', 'x')
    else
      v = call('HMGET', key, 'S', 'R')
    end
    heads[key] = bucket
    return v[1] or '0', v[2] or '0', v[3], v[1] or v[2]
  end
  if expiry then
    v = call('HMGET', key, 'h', 'S', 'R', 'x')
  else
    v = call('HMGET', key, 'h', 'S', 'R')
  end
  local h = v[1]
  if h ~= bucket and (not h or bucket + 0 > h + 0) then
    local slow = rare()
    if slow.move(key, h, bucket, bucket - span + 1) then
      if expiry then
        v = call('HMGET', key, 'h', 'S', 'R', 'x')
      else
        v = call('HMGET', key, 'h', 'S', 'R')
      end
    end
  end
  heads[key] = v[1]
  return v[2] or '0', v[3] or '0', v[4], v[2] or v[3]
end

-- Add settled spend `spend` and reservations `hold` (decimal strings; nil: none) to `bucket` of
-- counter `key`, read first (`read` or `apply`): to the totals alone when `bucket` is the head, or
-- becomes it (a counter that had none); an older bucket keeps figures of its own besides. Returns
-- the totals after as HINCRBY answers them, Lua numbers (see `figure`; nil for one not added).
local function write(key, bucket, spend, hold)
  local h = heads[key]
  if h ~= bucket then
    if not h then
      call('HSET', key, 'h', bucket)
      heads[key] = bucket
    else
      if spend then
        call('HINCRBY', key, 's:' .. bucket, spend)
      end
      if hold then
        call('HINCRBY', key, 'r:' .. bucket, hold)
      end
    end
  end
  local s, r
  if spend then
    s = call('HINCRBY', key, 'S', spend)
  end
  if hold then
    r = call('HINCRBY', key, 'R', hold)
  end
  return s, r
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

-- Replace the hold `held` in `bucket` by settled spend `actual`; returns spent before and after,
-- and reserved after (each a decimal string, or a number that is the figure exactly: from
-- HINCRBY's answers, when below 2^53), and true when the counter had lost the hold (the caller
-- keeps it then: the reservation kept it until its window's end when the hold was added). A
-- bucket that left its rolling window takes nothing: that spend is outside the window already.
-- The usual hold is in the head (a calendar counter's only bucket), whose figures are the totals:
-- it is moved there without reading them first (the spend before is the spend after less
-- `actual`). A counter's reservations include every hold in it, so taking one off leaves them at
-- 0 or more; less means a calendar counter that lost the hold (its key expired or was evicted, and
-- may have been made anew since): its reservations are put back and the spend kept. A hold of 0
-- tells nothing by that test, nor does a bucket other than the head: those are read first.
local function apply(key, bucket, span, held, actual)
  local calendar = bucket == CALENDAR and span == '1'
  local s, r
  if held ~= '0' and (calendar or call('HGET', key, 'h') == bucket) then
    heads[key] = bucket
    r = call('HINCRBY', key, 'R', negate(held))
    s = call('HINCRBY', key, 'S', actual)
    local lost = r < 0
    if lost then
      r = call('HINCRBY', key, 'R', held)
    end
    local after, reserved = figure(s), figure(r)
    if after and reserved and #actual <= EXACT_DIGITS then
      return after - actual, after, reserved, lost
    end
    local v = call('HMGET', key, 'S', 'R')
    local slow = rare()
    return slow.difference(v[1], actual), v[1], v[2] or '0', lost
  end
  local v, live
  if calendar then
    v = call('HMGET', key, 'S', 'R')
    heads[key], live = bucket, v[2]
  else
    v = call('HMGET', key, 'h', 'S', 'R', 'r:' .. bucket)
    heads[key], live = v[1], v[1] == bucket or v[4]
    v[1], v[2] = v[2], v[3]
  end
  local before, reserved = v[1] or '0', v[2] or '0'
  if live then
    s, r = write(key, bucket, actual, negate(held))
  elseif calendar then -- a calendar counter that was lost: keep the spend
    s = write(key, bucket, actual, nil)
  else
    return before, before, reserved, false
  end
  local after = figure(s)
  if r then
    reserved = figure(r)
  end
  if not (after and reserved) then -- past 2^53: read as decimal strings
    v = call('HMGET', key, 'S', 'R')
    return before, v[1], v[2] or '0', not live
  end
  return before, after, reserved, not live
end
