-- The buckets of each counter: per counter, the flat list {head, spent, reserved, bucket, spent,
-- reserved, ...}: its head and totals, then each other live bucket and its own figures (decimal
-- strings; the caller finds the head's as the totals less the others', exactly: a Lua number
-- would round amounts past 2^53). A counter without a head ('' for it) has no other bucket.
-- KEYS: counters. ARGV: bucket and span per counter. Reads create no key.
local buckets = checked(function(KEYS, ARGV)
  local out = {}
  for i = 1, #KEYS do
    local key = KEYS[i]
    local spent, reserved = read(key, ARGV[2 * i - 1], ARGV[2 * i])
    local head = heads[key]
    local flat = {head or '', spent, reserved}
    if head then
      local cells, order = {}, {}
      local fields = call('HGETALL', key)
      for j = 1, #fields, 2 do
        local kind, index = string.match(fields[j], '^([sr]):(-?%d+)$')
        if kind and index ~= head then
          local cell = cells[index]
          if not cell then
            cell = {index, '0', '0'}
            cells[index] = cell
            order[#order + 1] = index
          end
          cell[kind == 's' and 2 or 3] = fields[j + 1]
        end
      end
      for _, index in ipairs(order) do
        for _, value in ipairs(cells[index]) do
          flat[#flat + 1] = value
        end
      end
    end
    out[i] = flat
  end
  return out
end)
