-- Add settled spend to the bucket each window names.
-- KEYS: one counter per entry. ARGV per entry: bucket, span, amount, keep-until ms.
local load = checked(function(KEYS, ARGV)
  for i = 1, #KEYS do
    local a = (i - 1) * 4
    local _, _, x = read(KEYS[i], ARGV[a + 1], ARGV[a + 2], true)
    write(KEYS[i], ARGV[a + 1], ARGV[a + 3], nil)
    keep_counter(KEYS[i], x, ARGV[a + 4])
  end
  return 0
end)
