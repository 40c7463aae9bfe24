-- Spent and reserved totals per counter, and the stored value of each flag.
-- KEYS: n counters, then the flags. ARGV: n, then bucket and span per counter.
local snapshot = checked(function(KEYS, ARGV)
  local n = tonumber(ARGV[1])
  local out = {}
  for i = 1, n do
    local spent, reserved = read(KEYS[i], ARGV[2 * i], ARGV[2 * i + 1])
    out[#out + 1] = spent
    out[#out + 1] = reserved
  end
  for i = n + 1, #KEYS do
    out[#out + 1] = call('GET', KEYS[i]) or ''
  end
  return out
end)
