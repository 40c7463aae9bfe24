-- Settle (or, with zero amounts, release) a reservation once: move each hold to its actual spend,
-- and claim the alert thresholds that the settled spend crossed (each flag once per period), so
-- that a settlement and its alerts take one round trip.
-- KEYS: reservations hash, deadlines zset, one counter per hold, then one flag per threshold.
-- ARGV: id, number of holds, now (epoch seconds; read by thresholds alone), the keep-until ms of
-- each hold, comma-separated (read only for a counter that lost its hold), then per hold: bucket,
-- span, held, actual; then per threshold: hold number (from 1), level, expires_at.
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

local settle = checked(function(KEYS, ARGV)
  local id = ARGV[1]
  if call('HDEL', KEYS[1], id) == 0 then
    return {}
  end
  call('ZREM', KEYS[2], id)
  local holds = ARGV[2] + 0
  -- made with room for five holds and two thresholds: a table that grows is rehashed at each power of two
  local out = {'settled', nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
  for i = 1, holds do
    local a = 1 + 4 * i
    local before, after, reserved, lost = apply(KEYS[i + 2], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
    out[3 * i - 1], out[3 * i], out[3 * i + 1] = before, after, reserved
    if lost then
      keep_counter(KEYS[i + 2], nil, numbers(ARGV[4])[i])
    end
  end
  local t, n = 5 + holds * 4, 3 * holds + 1
  for i = holds + 3, #KEYS do
    local at = 3 * ARGV[t] - 1 -- where `out` holds the settled spend before, then after
    local level = ARGV[t + 1]
    local claimed = 0
    -- crossed: before < level <= after
    if reaches(out[at + 1], level) and not reaches(out[at], level) then
      local current = call('GET', KEYS[i])
      if not current or tonumber(string.match(current, '^[^|]*')) <= tonumber(ARGV[3]) then
        call('SET', KEYS[i], ARGV[t + 2])
        keep(KEYS[i], math.ceil(ARGV[t + 2] * 1000)) -- as the caller's ms of it: the same double, rounded up
        claimed = 1
      end
    end
    n = n + 1
    out[n] = claimed
    t = t + 3
  end
  return out
end)
