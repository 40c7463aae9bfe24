-- The buckets of each counter, each as the flat list {bucket, spent, reserved, ...} (decimal
-- strings, added by the caller: a Lua number would round amounts past 2^53).
-- KEYS: counters. ARGV: bucket and span per counter. Reads create no key.
local no = refused()
if no then
  return no
end
local out = {}
for i = 1, #KEYS do
  advance(KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
  local cells, order = {}, {}
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    local kind, index = string.match(fields[j], '^([sr]):(-?%d+)$')
    if kind then
      local cell = cells[index]
      if not cell then
        cell = {index, '0', '0'}
        cells[index] = cell
        order[#order + 1] = index
      end
      cell[kind == 's' and 2 or 3] = fields[j + 1]
    end
  end
  local flat = {}
  for _, index in ipairs(order) do
    for _, value in ipairs(cells[index]) do
      flat[#flat + 1] = value
    end
  end
  out[i] = flat
end
return out
