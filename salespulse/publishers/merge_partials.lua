-- Set per-partition partials and rewrite their totals, atomically (salespulse, docs/outputs.md).
-- ARGV: channel, family, partition, n, then n times: key, watermark, ttl_s, nfields, field, value, ...
-- For each key K: hash "K#p<partition>" holds that partition's absolute values and "_wm"; set
-- "K#parts" names every partial hash; hash K is the field-wise sum of all partials. A partial with
-- a lower watermark than the stored one is stale (from a worker that lost the partition) and ignored.
local channel, family, partition = ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local i = 5
local changed = {}
for _ = 1, n do
  local key, wm, ttl, nf = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  local pkey = key .. '#p' .. partition
  local parts = key .. '#parts'
  local stored = tonumber(redis.call('HGET', pkey, '_wm') or '-1')
  if wm >= stored then
    redis.call('DEL', pkey)
    local args = {'_wm', tostring(wm)}
    for j = 0, nf - 1 do
      args[#args + 1] = ARGV[i + 2 * j]
      args[#args + 1] = ARGV[i + 2 * j + 1]
    end
    redis.call('HSET', pkey, unpack(args))
    redis.call('SADD', parts, pkey)
    local total, order = {}, {}
    for _, part in ipairs(redis.call('SMEMBERS', parts)) do
      local kv = redis.call('HGETALL', part)
      for j = 1, #kv, 2 do
        local f = kv[j]
        if f ~= '_wm' then
          if total[f] == nil then
            order[#order + 1] = f
            total[f] = 0
          end
          total[f] = total[f] + tonumber(kv[j + 1])
        end
      end
    end
    redis.call('DEL', key)
    local targs, values = {}, {}
    for _, f in ipairs(order) do
      targs[#targs + 1] = f
      targs[#targs + 1] = tostring(total[f])
      values[f] = total[f]
    end
    if #targs > 0 then
      redis.call('HSET', key, unpack(targs))
    end
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
      redis.call('EXPIRE', pkey, ttl)
      redis.call('EXPIRE', parts, ttl)
    end
    changed[#changed + 1] = {key = key, values = values}
  end
  i = i + 2 * nf
end
if #changed > 0 and channel ~= '' then
  redis.call('PUBLISH', channel, cjson.encode({family = family, updates = changed}))
end
return #changed
