-- Hold every amount, or none: each hold with a limit must fit under it. The answer carries what
-- the counters held just before (and the flags), so that the caller, who decided on figures it
-- remembered, learns in the same round trip whether they were the current ones.
-- KEYS: reservations hash, deadlines zset, one counter per hold, then the flags to read.
-- ARGV: id, expires_at, record, number of holds, then per hold: bucket, span, amount, limit ('' for
-- none), keep-until ms (the window's: a counter is kept until the reservation's deadline if later).
-- Returns {'known'} for an id already held (a retried call), else {'ok'} or {'conflict', index}
-- followed by spent and reserved per hold and the stored value of each flag ('' when unset).
-- An id held already is rare (a retry after a lost answer), so it is not looked up first: the
-- record is added only if absent, and a retried call's holds are taken off again when it was
-- there (or found before its own hold can refuse it).
local no = refused()
if no then
  return no
end
local id = ARGV[1]
local holds = ARGV[4] + 0
local out = {'ok'}
local conflict = nil
local expiries = {}
for i = 1, holds do
  local a = 5 + (i - 1) * 5
  local spent, reserved, x = read(KEYS[i + 2], ARGV[a], ARGV[a + 1])
  expiries[i] = x
  out[2 * i] = spent
  out[2 * i + 1] = reserved
  if not conflict and ARGV[a + 3] ~= '' and exceeded(ARGV[a + 3], spent, reserved, ARGV[a + 2]) then
    conflict = i - 1
  end
end
for i = holds + 3, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
if conflict then
  if redis.call('HEXISTS', KEYS[1], id) == 1 then
    return {'known'}
  end
  out[1] = 'conflict'
  table.insert(out, 2, conflict)
  return out
end
local deadline = math.ceil(ARGV[2] * 1000) -- as the caller's ms of it: the same double, rounded up
for i = 1, holds do
  local a = 5 + (i - 1) * 5
  write(KEYS[i + 2], ARGV[a], nil, ARGV[a + 2])
  keep_counter(KEYS[i + 2], expiries[i], later(ARGV[a + 4], deadline))
end
if redis.call('HSETNX', KEYS[1], id, ARGV[3]) == 0 then
  for i = 1, holds do
    local a = 5 + (i - 1) * 5
    write(KEYS[i + 2], ARGV[a], nil, negate(ARGV[a + 2]))
  end
  return {'known'}
end
redis.call('ZADD', KEYS[2], ARGV[2], id)
return out
