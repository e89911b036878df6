-- Set per-partition partials and rewrite their totals, atomically (salespulse, docs/outputs.md).
-- ARGV[1]: JSON {"channel", "family", "derived": spec or null,
--                "keys": [[key, ttl_s, [[partition, watermark, {field: value}], ...]], ...]}
-- (one JSON argument: decoding it here in C is far cheaper than packing thousands of arguments).
-- For each key K: hash "K#p<partition>" holds that partition's absolute values and "_wm"; set
-- "K#parts" names every partial hash; hash K is the field-wise sum of all partials, rewritten once
-- per key whatever number of its partials changed. A partial with a lower watermark than the stored
-- one is stale (from a worker that has since lost the partition) and ignored.
-- Derived fields (rates, quantiles) are computed from the merged totals, never summed:
-- spec {"ratios": [[name, numerator, denominator]], "quantiles": [[name, q]],
--       "buckets": [[field, upper bound or -1 for +Inf]]} (non-cumulative bucket counts), and optionally
--       "sums": [{"name", "terms": [[field, coefficient]], "requires": [field]}] (computed first, when
--       every required field and some term is present), "products": [[name, [numerators], [denominators]]]
--       (after ratios; every numerator present, denominator product > 0) and "histograms":
--       [{"buckets": [...], "quantiles": [...]}] for families with several histograms.
-- Targets and team-beside fields: see the section "targets and rep vs team" below.
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

local function put(total, order, name, value)
  if total[name] == nil then order[#order + 1] = name end
  total[name] = value
end

local function quantiles_of(total, order, buckets, quantiles)
  for _, qs in ipairs(quantiles or {}) do
    local value = quantile(total, buckets or {}, qs[2])
    if value ~= nil then put(total, order, qs[1], value) end
  end
end

local function derive(total, order)
  for _, s in ipairs(spec.sums or {}) do
    local ok, any, value = true, false, 0
    for _, f in ipairs(s.requires or {}) do
      if total[f] == nil then ok = false end
    end
    for _, t in ipairs(s.terms) do
      if total[t[1]] ~= nil then
        any = true
        value = value + total[t[1]] * t[2]
      end
    end
    if ok and any then put(total, order, s.name, value) end
  end
  for _, r in ipairs(spec.ratios or {}) do
    local den = total[r[3]] or 0
    if den > 0 then put(total, order, r[1], (total[r[2]] or 0) / den) end
  end
  for _, p in ipairs(spec.products or {}) do
    local num, den, ok = 1, 1, true
    for _, f in ipairs(p[2]) do
      if total[f] == nil then ok = false else num = num * total[f] end
    end
    for _, f in ipairs(p[3]) do den = den * (total[f] or 0) end
    if ok and den > 0 then put(total, order, p[1], num / den) end
  end
  quantiles_of(total, order, spec.buckets, spec.quantiles)
  for _, h in ipairs(spec.histograms or {}) do quantiles_of(total, order, h.buckets, h.quantiles) end
end

-- ---- targets and rep vs team (docs/outputs.md) ------------------------------------------------------
-- "target:<kind>" fields are not additive: each partition's partial carries the same target, the total
-- takes the largest, and "attainment:<kind>" = total[kind] / target is derived from the merged total.
-- payload.beside lists rate fields; a key's entry may name its group key (entry[4], a rep's team total).
-- A rewritten rep total gets "team_<rate>" copied from its team's total; "K#group" names the team key
-- and "<team key>#members" the rep keys, so a rewritten team total refreshes its reps' copies.
-- Payloads list team keys before rep keys, so both orders meet the newest team values.
local beside = nil
if payload.beside ~= nil and payload.beside ~= cjson.null and #payload.beside > 0 then beside = payload.beside end

local function merge_field(total, f, v)
  if string.sub(f, 1, 7) == 'target:' then
    if v > total[f] then total[f] = v end
  else
    total[f] = total[f] + v
  end
end

local function add_attainment(total, order)
  local targets = {}
  for _, f in ipairs(order) do
    if string.sub(f, 1, 7) == 'target:' then targets[#targets + 1] = f end
  end
  for _, f in ipairs(targets) do
    if total[f] > 0 then
      local name = 'attainment:' .. string.sub(f, 8)
      order[#order + 1] = name
      total[name] = (total[string.sub(f, 8)] or 0) / total[f]
    end
  end
end

local function copy_beside(key, group, values)
  local got = redis.call('HMGET', group, unpack(beside))
  local set, unset = {}, {}
  for i, rate in ipairs(beside) do
    if got[i] then
      set[#set + 1] = 'team_' .. rate
      set[#set + 1] = got[i]
      if values ~= nil then values['team_' .. rate] = tonumber(got[i]) end
    else
      unset[#unset + 1] = 'team_' .. rate
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  if #unset > 0 then redis.call('HDEL', key, unpack(unset)) end
end

local function link_group(key, group, ttl, values)
  if group == nil or group == cjson.null then
    redis.call('DEL', key .. '#group')
    return
  end
  redis.call('SET', key .. '#group', group)
  redis.call('SADD', group .. '#members', key)
  if ttl > 0 then
    redis.call('EXPIRE', key .. '#group', ttl)
    redis.call('EXPIRE', group .. '#members', ttl)
  end
  copy_beside(key, group, values)
end

local function refresh_members(group)
  local members = group .. '#members'
  for _, key in ipairs(redis.call('SMEMBERS', members)) do
    if redis.call('GET', key .. '#group') == group and redis.call('EXISTS', key) == 1 then
      copy_beside(key, group, nil)
    else
      redis.call('SREM', members, key)
    end
  end
end
-- ---- end of targets and rep vs team -----------------------------------------------------------------

local changed = {}
for _, entry in ipairs(payload.keys) do
  local key, ttl, partials = entry[1], entry[2], entry[3]
  local parts = key .. '#parts'
  local any = false
  for _, partial in ipairs(partials) do
    local partition, wm, fields = partial[1], partial[2], partial[3]
    local pkey = key .. '#p' .. partition
    local stored = tonumber(redis.call('HGET', pkey, '_wm') or '-1')
    if wm >= stored then
      redis.call('DEL', pkey)
      local args = {'_wm', tostring(wm)}
      for f, v in pairs(fields) do
        args[#args + 1] = f
        args[#args + 1] = string.format('%.15g', v)
      end
      redis.call('HSET', pkey, unpack(args))
      redis.call('SADD', parts, pkey)
      if ttl > 0 then redis.call('EXPIRE', pkey, ttl) end
      any = true
    end
  end
  if any then
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
          merge_field(total, f, tonumber(kv[j + 1]))
        end
      end
    end
    if spec ~= nil then derive(total, order) end
    add_attainment(total, order)
    redis.call('DEL', key)
    local targs, values = {}, {}
    for _, f in ipairs(order) do
      targs[#targs + 1] = f
      targs[#targs + 1] = string.format('%.15g', total[f])
      values[f] = total[f]
    end
    if #targs > 0 then redis.call('HSET', key, unpack(targs)) end
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
      redis.call('EXPIRE', parts, ttl)
    end
    if beside ~= nil then
      link_group(key, entry[4], ttl, values)
      refresh_members(key)
    end
    changed[#changed + 1] = {key = key, values = values}
  end
end
if #changed > 0 and channel ~= '' then
  redis.call('PUBLISH', channel, cjson.encode({family = family, updates = changed}))
end
return #changed
