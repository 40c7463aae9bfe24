-- Hold every amount, or none: each hold with a limit must fit under it.
-- KEYS: reservations hash, deadlines zset, one counter per hold.
-- ARGV: id, expires_at, record, then per hold: bucket, span, amount, limit ('' for none), keep-until ms.
-- Returns {'ok'}, {'known'} for an id already held (a retried call), or {'conflict', index, spent, reserved}.
local no = refused()
if no then
  return no
end
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 1 then
  return {'known'}
end
local holds = #KEYS - 2
for i = 1, holds do
  local a = 4 + (i - 1) * 5
  advance(KEYS[i + 2], ARGV[a], ARGV[a + 1])
end
for i = 1, holds do
  local a = 4 + (i - 1) * 5
  if ARGV[a + 3] ~= '' then
    local spent, reserved = totals(KEYS[i + 2])
    if exceeds({spent, reserved, ARGV[a + 2]}, ARGV[a + 3]) then
      return {'conflict', i - 1, spent, reserved}
    end
  end
end
local now = now_ms()
for i = 1, holds do
  local a = 4 + (i - 1) * 5
  add(KEYS[i + 2], 'r:' .. ARGV[a], 'R', ARGV[a + 2])
  keep(KEYS[i + 2], ARGV[a + 4], now)
end
redis.call('HSET', KEYS[1], id, ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], id)
return {'ok'}
