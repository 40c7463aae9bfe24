-- Set counters' settled spend to given figures (a rebuild from the ledger), keeping reservations.
-- KEYS: counters. ARGV: checked ('1': only under build MARK), then per counter: the settled total
-- it must still have ('' for any), the number of buckets n, then n times bucket, span, amount,
-- keep-until ms. A counter whose total moved since it was read is left alone; returns how many were.
local function replace(KEYS, ARGV)
  begin(KEYS, ARGV)
  if ARGV[1] == '1' then
    local no = refused()
    if no then
      return no
    end
  end
  local skipped = 0
  local a = 2
  for i = 1, #KEYS do
    local key, expected, n = KEYS[i], ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    if expected ~= '' and (call('HGET', key, 'S') or '0') ~= expected then
      skipped = skipped + 1
    else
      local fields = call('HKEYS', key)
      for _, field in ipairs(fields) do
        if string.match(field, '^s:') then
          call('HDEL', key, field)
        end
      end
      if #fields > 0 then
        call('HSET', key, 'S', '0')
      end
      for _ = 1, n do
        local _, _, x = read(key, ARGV[a], ARGV[a + 1], true)
        if ARGV[a + 2] ~= '0' then
          write(key, ARGV[a], ARGV[a + 2], nil)
        end
        keep_counter(key, x, ARGV[a + 3])
        a = a + 4
      end
    end
  end
  return skipped
end
