-- Settle (or, with zero amounts, release) a reservation once: move each hold to its actual spend,
-- and claim the alert thresholds that the settled spend crossed (each flag once per period), so
-- that a settlement and its alerts take one round trip.
-- KEYS: reservations hash, deadlines zset, one counter per hold, then one flag per threshold.
-- ARGV: id, number of holds, now (epoch seconds; read by thresholds alone), then per hold:
-- bucket, span, held, actual, keep-until ms (for a counter that lost the hold); then per
-- threshold: hold number (from 1), level, expires_at, the same in ms.
-- Returns {} when the id is not held (settled, released or expired already), else
-- {'settled', before1, after1, reserved1, ...} (settled spend before and after, reservations
-- after, per hold: each a decimal string, or an integer when below 2^53) followed by 1 or 0 per
-- threshold: whether this settlement claimed it.

-- Whether settled spend `spent` (a decimal string, or a number that is the figure exactly, below
-- 2^53) reaches the decimal string `level`. Against such a number the double nearest to `level`
-- compares as `level` does: rounding moves only a level beyond 2^53, and leaves it there.
local function reaches(spent, level)
  if type(spent) == 'number' then
    return spent >= level + 0
  end
  return not exceeded(spent, level)
end

local no = refused()
if no then
  return no
end
local id = ARGV[1]
if redis.call('HDEL', KEYS[1], id) == 0 then
  return {}
end
redis.call('ZREM', KEYS[2], id)
local holds = ARGV[2] + 0
local out = {'settled'}
for i = 1, holds do
  local a = 4 + (i - 1) * 5
  out[3 * i - 1], out[3 * i], out[3 * i + 1] =
    apply(KEYS[i + 2], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
end
local t = 4 + holds * 5
for i = holds + 3, #KEYS do
  local at = 3 * ARGV[t] - 1 -- where `out` holds the settled spend before, then after
  local level = ARGV[t + 1]
  local claimed = 0
  -- crossed: before < level <= after
  if reaches(out[at + 1], level) and not reaches(out[at], level) then
    local current = redis.call('GET', KEYS[i])
    if not current or tonumber(string.match(current, '^[^|]*')) <= tonumber(ARGV[3]) then
      redis.call('SET', KEYS[i], ARGV[t + 2])
      keep(KEYS[i], ARGV[t + 3])
      claimed = 1
    end
  end
  out[#out + 1] = claimed
  t = t + 4
end
return out
