-- Set flags, keeping the later expiry when a flag is set already.
-- KEYS: flag keys. ARGV per flag: expires_at (epoch seconds), the same in milliseconds.
local set_flags = checked(function(KEYS, ARGV)
  for i = 1, #KEYS do
    local at = ARGV[2 * i - 1]
    local current = call('GET', KEYS[i])
    if not current or tonumber(at) > tonumber(string.match(current, '^[^|]*')) then
      call('SET', KEYS[i], at)
      keep(KEYS[i], ARGV[2 * i])
    end
  end
  return 0
end)
