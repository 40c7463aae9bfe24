-- Hold every amount, or none: each hold with a limit must fit under it. The answer carries what
-- the counters held just before (and the flags), so that the caller, who decided on figures it
-- remembered, learns in the same round trip whether they were the current ones.
-- KEYS: reservations hash, deadlines zset, one counter per hold, then the flags to read.
-- ARGV: id, expires_at, record, keep-until, then per hold: bucket, span, amount, limit ('' for
-- none). Keep-until is '' when the caller knows every counter is kept long enough already (it
-- said so before: see `keeping`), else the keep-until ms of each hold, comma-separated (a counter
-- is kept until then, or until the reservation's deadline if later).
-- Returns {'known'} for an id already held (a retried call), {'keep'} when a counter does not
-- exist and no keep-until was given (nothing was held: send it again with them), else {'ok'} or
-- {'conflict', index} followed by spent and reserved per hold and the stored value of each flag
-- ('' when unset).
-- An id held already is rare (a retry after a lost answer), so it is not looked up first: the
-- record is added only if absent, and a retried call's holds are taken off again when it was
-- there (or found before its own hold can refuse it).

local reserve = checked(function(KEYS, ARGV)
  local id = ARGV[1]
  local holds = (#ARGV - 4) / 4
  local keeping = ARGV[4] ~= '' -- the expiries are this call's to keep (and 'x' to read)
  -- made with room for five holds: a table that grows is rehashed at each power of two
  local out = {'ok', nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
  local conflict = nil
  local expiries = keeping and {nil, nil, nil, nil, nil}
  for i = 1, holds do
    local a = 1 + 4 * i
    local spent, reserved, x, exists = read(KEYS[i + 2], ARGV[a], ARGV[a + 1], keeping)
    if not (exists or keeping) then -- a new counter, whose expiry the caller did not give
      return {'keep'}
    end
    if keeping then
      expiries[i] = x
    end
    out[2 * i] = spent
    out[2 * i + 1] = reserved
    if not conflict and ARGV[a + 3] ~= '' and exceeded(ARGV[a + 3], spent, reserved, ARGV[a + 2]) then
      conflict = i - 1
    end
  end
  local n = 2 * holds + 1
  for i = holds + 3, #KEYS do
    n = n + 1
    out[n] = call('GET', KEYS[i]) or ''
  end
  if conflict then
    if call('HEXISTS', KEYS[1], id) == 1 then
      return {'known'}
    end
    out[1] = 'conflict'
    table.insert(out, 2, conflict)
    return out
  end
  for i = 1, holds do
    write(KEYS[i + 2], ARGV[1 + 4 * i], nil, ARGV[3 + 4 * i])
  end
  if keeping then
    local deadline = math.ceil(ARGV[2] * 1000) -- as the caller's ms of it: the same double, rounded up
    local untils = numbers(ARGV[4])
    for i = 1, holds do
      keep_counter(KEYS[i + 2], expiries[i], later(untils[i], deadline))
    end
  end
  if call('HSETNX', KEYS[1], id, ARGV[3]) == 0 then
    for i = 1, holds do
      write(KEYS[i + 2], ARGV[1 + 4 * i], nil, negate(ARGV[3 + 4 * i]))
    end
    return {'known'}
  end
  call('ZADD', KEYS[2], ARGV[2], id)
  return out
end)
