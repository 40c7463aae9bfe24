-- Settle reservations whose deadline is at or before `now` at their reserved amounts.
-- KEYS: reservations hash, deadlines zset. ARGV: now (epoch seconds), most to settle.
-- Returns the records of the reservations settled. Counter keys come from the records, so this
-- script needs every key on one server (a standalone Redis, or one hash slot).
local expire = checked(function(KEYS, ARGV)
  local ids = call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  local out = {}
  for _, id in ipairs(ids) do
    call('ZREM', KEYS[2], id)
    local record = call('HGET', KEYS[1], id)
    if record then
      call('HDEL', KEYS[1], id)
      for _, hold in ipairs(cjson.decode(record).h) do
        local _, _, _, lost = apply(hold.k, hold.b, hold.n, hold.a, hold.a)
        if lost then
          keep_counter(hold.k, nil, hold.t)
        end
      end
      out[#out + 1] = record
    end
  end
  return out
end)
