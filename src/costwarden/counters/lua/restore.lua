-- Hold again, without a limit check, reservations of calls still in flight that an emptied store
-- lost (they were admitted already); ids held already are left alone.
-- KEYS: reservations hash, deadlines zset. ARGV per reservation: id, expires_at, record.
local restore = checked(function(KEYS, ARGV)
  local restored = 0
  for i = 1, #ARGV, 3 do
    local id = ARGV[i]
    if call('HEXISTS', KEYS[1], id) == 0 then
      local deadline = math.ceil(ARGV[i + 1] * 1000)
      for _, hold in ipairs(cjson.decode(ARGV[i + 2]).h) do
        local _, _, x = read(hold.k, hold.b, hold.n, true)
        write(hold.k, hold.b, nil, hold.a)
        keep_counter(hold.k, x, later(hold.t, deadline))
      end
      call('HSET', KEYS[1], id, ARGV[i + 2])
      call('ZADD', KEYS[2], ARGV[i + 1], id)
      restored = restored + 1
    end
  end
  return restored
end)
