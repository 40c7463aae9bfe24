-- Set a flag unless it is set at `now`; 1 for the first caller only.
-- KEYS: the flag. ARGV: expires_at (epoch seconds), now, expires_at in milliseconds, token.
-- The token makes a retried call (whose first attempt did land) see its own claim.
local function claim(KEYS, ARGV)
  begin(KEYS, ARGV)
  local current = call('GET', KEYS[1])
  if current then
    local at, token = string.match(current, '^([^|]*)|?(.*)$')
    if token == ARGV[4] then
      return 1
    end
    if tonumber(at) > tonumber(ARGV[2]) then
      return 0
    end
  end
  call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[4])
  keep(KEYS[1], ARGV[3])
  return 1
end
