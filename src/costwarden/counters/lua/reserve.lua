-- Hold every amount, or none: each hold with a limit must fit under it. The answer carries what
-- the counters held just before (and the flags), so that the caller, who decided on figures it
-- remembered, learns in the same round trip whether they were the current ones.
-- KEYS: reservations hash, deadlines zset, one counter per hold, then the flags to read.
-- ARGV: id, expires_at, record, number of holds, then per hold: bucket, span, amount, limit ('' for
-- none), keep-until ms.
-- Returns {'known'} for an id already held (a retried call), else {'ok'} or {'conflict', index}
-- followed by spent and reserved per hold and the stored value of each flag ('' when unset).
local no = refused()
if no then
  return no
end
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 1 then
  return {'known'}
end
local holds = tonumber(ARGV[4])
local out = {'ok'}
local conflict = nil
local seen, again, counters = {}, {}, {}
for i = 1, holds do
  local a = 5 + (i - 1) * 5
  local key = KEYS[i + 2]
  local spent, reserved, x, r = read(key, ARGV[a], ARGV[a + 1], 'r:' .. ARGV[a])
  counters[i] = {spent, reserved, x, r}
  again[key], seen[key] = seen[key], true -- a counter held twice must be read again to add to it
  out[#out + 1] = spent
  out[#out + 1] = reserved
  if not conflict and ARGV[a + 3] ~= '' and exceeds({spent, reserved, ARGV[a + 2]}, ARGV[a + 3]) then
    conflict = i - 1
  end
end
for i = holds + 3, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
if conflict then
  out[1] = 'conflict'
  table.insert(out, 2, conflict)
  return out
end
local now = now_ms()
for i = 1, holds do
  local a = 5 + (i - 1) * 5
  local key, c = KEYS[i + 2], counters[i]
  if again[key] then
    c = {read(key, ARGV[a], ARGV[a + 1], 'r:' .. ARGV[a])}
  end
  put(key, ARGV[a], c[1], c[2], nil, c[4], nil, ARGV[a + 2])
  keep_counter(key, c[3], ARGV[a + 4], now)
end
redis.call('HSET', KEYS[1], id, ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], id)
return out
