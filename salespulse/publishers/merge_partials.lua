-- Set per-partition partials and rewrite their totals, atomically (salespulse, docs/outputs.md).
-- ARGV[1]: JSON {"channel", "family", "derived": spec or null,
--                "keys": [[key, ttl_s, [[partition, watermark, {field: value}], ...]], ...]}
-- (one JSON argument: decoding it here in C is far cheaper than packing thousands of arguments).
-- For each key K: hash "K#p<partition>" holds that partition's absolute values and "_wm"; set
-- "K#parts" names every partial hash; hash K is the field-wise sum of all partials. A partial with a
-- lower watermark than the stored one is stale (from a worker that has since lost the partition) and
-- ignored. K is updated by the difference between each new partial and the one it replaces (read
-- anyway to compare watermarks), once per key whatever number of its partials changed; it is rebuilt
-- as the sum of every partial when it does not exist (new, or expired) or lost a partial (expired).
-- Derived fields (rates, quantiles) are computed from the merged totals, never summed:
-- spec {"ratios": [[name, numerator, denominator]], "quantiles": [[name, q]],
--       "buckets": [[field, upper bound or -1 for +Inf]]} (non-cumulative bucket counts).
local payload = cjson.decode(ARGV[1])
local channel, family = payload.channel, payload.family
local spec = nil
if payload.derived ~= cjson.null then spec = payload.derived end

local function quantile(total, buckets, q)
  local count = 0
  for _, b in ipairs(buckets) do count = count + (total[b[1]] or 0) end
  if count <= 0 then return nil end
  local target, seen, lower = q * count, 0, 0
  for _, b in ipairs(buckets) do
    local c, upper = total[b[1]] or 0, b[2]
    if c > 0 and seen + c >= target then
      if upper < 0 then return lower end
      return lower + (upper - lower) * (target - seen) / c
    end
    seen = seen + c
    if upper >= 0 then lower = upper end
  end
  return lower
end

local function derive(total, order)
  for _, r in ipairs(spec.ratios or {}) do
    local den = total[r[3]] or 0
    if den ~= 0 then
      order[#order + 1] = r[1]
      total[r[1]] = (total[r[2]] or 0) / den
    end
  end
  for _, qs in ipairs(spec.quantiles or {}) do
    local value = quantile(total, spec.buckets or {}, qs[2])
    if value ~= nil then
      order[#order + 1] = qs[1]
      total[qs[1]] = value
    end
  end
end

local function fmt(v) return string.format('%.15g', v) end

local derived_names = {}
if spec ~= nil then
  for _, r in ipairs(spec.ratios or {}) do derived_names[#derived_names + 1] = r[1] end
  for _, qs in ipairs(spec.quantiles or {}) do derived_names[#derived_names + 1] = qs[1] end
end

local function hash_table(kv)
  local t = {}
  for j = 1, #kv, 2 do t[kv[j]] = kv[j + 1] end
  return t
end

-- K rewritten whole as the field-wise sum of every partial that still exists.
local function rebuild(key, parts)
  local total, order = {}, {}
  for _, part in ipairs(redis.call('SMEMBERS', parts)) do
    local kv = redis.call('HGETALL', part)
    if #kv == 0 then redis.call('SREM', parts, part) end
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
  if spec ~= nil then derive(total, order) end
  redis.call('DEL', key)
  local targs, values = {}, {}
  for _, f in ipairs(order) do
    targs[#targs + 1] = f
    targs[#targs + 1] = fmt(total[f])
    values[f] = total[f]
  end
  if #targs > 0 then redis.call('HSET', key, unpack(targs)) end
  return values
end

local function integral(x) return x == math.floor(x) end

-- K plus the per-field differences; a field no partial holds any more leaves K. Integer sums move
-- exactly; a field with a fraction (in a partial or in K) is summed again over every partial instead,
-- since a difference of large and small floats would lose the small ones. nil: rebuild instead.
local function apply_deltas(key, parts, deltas, delta_order, dropped, inexact)
  local kv = redis.call('HGETALL', key)
  if #kv == 0 then return nil end
  local total, order = {}, {}
  for j = 1, #kv, 2 do total[kv[j]] = tonumber(kv[j + 1]) end
  local resum = {}
  for _, f in ipairs(delta_order) do
    if inexact[f] or not integral(total[f] or 0) then resum[#resum + 1] = f end
  end
  local sums = {}
  if #resum > 0 then
    for _, part in ipairs(redis.call('SMEMBERS', parts)) do
      local vals = redis.call('HMGET', part, unpack(resum))
      for i, f in ipairs(resum) do
        if vals[i] then sums[f] = (sums[f] or 0) + tonumber(vals[i]) end
      end
    end
  end
  local targs, gone = {}, {}
  for _, f in ipairs(delta_order) do
    local value
    if inexact[f] or not integral(total[f] or 0) then
      value = sums[f]
    else
      value = (total[f] or 0) + deltas[f]
      if value == 0 and dropped[f] then  -- still held (as 0) by another partial?
        local held = false
        for _, part in ipairs(redis.call('SMEMBERS', parts)) do
          if redis.call('HEXISTS', part, f) == 1 then
            held = true
            break
          end
        end
        if not held then value = nil end
      end
    end
    total[f] = value
    if value == nil then
      gone[#gone + 1] = f
    else
      targs[#targs + 1] = f
      targs[#targs + 1] = fmt(value)
    end
  end
  if spec ~= nil then
    for _, name in ipairs(derived_names) do total[name] = nil end
    derive(total, order)
    for _, name in ipairs(derived_names) do
      if total[name] ~= nil then
        targs[#targs + 1] = name
        targs[#targs + 1] = fmt(total[name])
      else
        gone[#gone + 1] = name
      end
    end
  end
  if #targs > 0 then redis.call('HSET', key, unpack(targs)) end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  return total
end

local changed = {}
for _, entry in ipairs(payload.keys) do
  local key, ttl, partials = entry[1], entry[2], entry[3]
  local parts = key .. '#parts'
  local any, whole = false, false
  local deltas, delta_order, dropped, inexact = {}, {}, {}, {}
  for _, partial in ipairs(partials) do
    local partition, wm, fields = partial[1], partial[2], partial[3]
    local pkey = key .. '#p' .. partition
    local old = hash_table(redis.call('HGETALL', pkey))
    local stored = tonumber(old._wm or '-1')
    if wm >= stored then
      if old._wm == nil then
        whole = whole or redis.call('SADD', parts, pkey) == 0  -- named but gone: it expired
      end
      old._wm = nil
      local args, stale = {'_wm', tostring(wm)}, {}
      for f, v in pairs(fields) do
        local before = old[f]
        local text = fmt(v)
        if before ~= text then
          args[#args + 1] = f
          args[#args + 1] = text
          local was = tonumber(before) or 0
          if not (integral(v) and integral(was)) then inexact[f] = true end
          local d = v - was
          if deltas[f] == nil then
            delta_order[#delta_order + 1] = f
            deltas[f] = d
          else
            deltas[f] = deltas[f] + d
          end
        end
        old[f] = nil
      end
      for f, before in pairs(old) do
        stale[#stale + 1] = f
        dropped[f] = true
        if not integral(tonumber(before)) then inexact[f] = true end
        if deltas[f] == nil then
          delta_order[#delta_order + 1] = f
          deltas[f] = -tonumber(before)
        else
          deltas[f] = deltas[f] - tonumber(before)
        end
      end
      redis.call('HSET', pkey, unpack(args))
      if #stale > 0 then redis.call('HDEL', pkey, unpack(stale)) end
      if ttl > 0 then redis.call('EXPIRE', pkey, ttl) end
      any = true
    end
  end
  if any then
    local values = nil
    if not whole then values = apply_deltas(key, parts, deltas, delta_order, dropped, inexact) end
    if values == nil then values = rebuild(key, parts) end
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
      redis.call('EXPIRE', parts, ttl)
    end
    changed[#changed + 1] = {key = key, values = values}
  end
end
if #changed > 0 and channel ~= '' then
  redis.call('PUBLISH', channel, cjson.encode({family = family, updates = changed}))
end
return #changed
