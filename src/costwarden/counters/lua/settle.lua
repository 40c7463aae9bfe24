-- Settle (or, with zero amounts, release) a reservation once: move each hold to its actual spend.
-- KEYS: reservations hash, deadlines zset, one counter per hold.
-- ARGV: id, then per hold: bucket, span, held, actual, keep-until ms.
-- Returns {} when the id is not held (settled, released or expired already), else
-- {'settled', before1, after1, before2, after2, ...}.
local no = refused()
if no then
  return no
end
local id = ARGV[1]
if redis.call('HDEL', KEYS[1], id) == 0 then
  return {}
end
redis.call('ZREM', KEYS[2], id)
local now = now_ms()
local out = {'settled'}
for i = 1, #KEYS - 2 do
  local a = 2 + (i - 1) * 5
  local before, after = apply(KEYS[i + 2], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], now)
  out[#out + 1] = before
  out[#out + 1] = after
end
return out
