-- Set per-partition partials and rewrite their totals, atomically (salespulse, docs/outputs.md).
-- ARGV[1]: JSON {"channel", "family", "derived": spec or null, "beside": [rate, ...] or null,
--                "keys": [[key, ttl_s, [[partition, watermark, "<watermark> <fields as JSON>"], ...], group], ...]}
-- (one JSON argument: decoding it here in C is far cheaper than packing thousands of arguments).
-- For each key K: hash "K#partials" holds, per partition, "<watermark> <fields as JSON>" (the fields
-- as the worker serialised them, so no precision is lost on the way), and "_group" (see below); hash K
-- is the field-wise sum of every partition's fields, rewritten once per key whatever number of its
-- partials changed. A partial with a lower watermark than the stored one is stale (from a worker that
-- has since lost the partition) and ignored. All of a key's partials are read with one HGETALL: a few
-- commands per key, whatever the number of partitions and fields.
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
-- A rewritten rep total gets "team_<rate>" from its team's total; the rep's "K#partials" field "_group"
-- names its team and "<team key>#members" is the set of the team's rep keys (a rep that changes team
-- leaves the old set), so a rewritten team total refreshes its members' copies. Payloads list each team
-- key before its reps, whose copies then come from the values just written.
local beside = nil
if payload.beside ~= nil and payload.beside ~= cjson.null and #payload.beside > 0 then beside = payload.beside end

-- Whether a field is a target, memoised: the merge loop meets the same few field names thousands of times.
local target_field = {}
local function is_target(f)
  local found = target_field[f]
  if found == nil then
    found = string.sub(f, 1, 7) == 'target:'
    target_field[f] = found
  end
  return found
end

local function merge_field(total, f, v)
  if is_target(f) then
    if v > total[f] then total[f] = v end
  else
    total[f] = total[f] + v
  end
end

local function add_attainment(total, order)
  local targets = {}
  for _, f in ipairs(order) do
    if is_target(f) then targets[#targets + 1] = f end
  end
  for _, f in ipairs(targets) do
    if total[f] > 0 then
      local name = 'attainment:' .. string.sub(f, 8)
      order[#order + 1] = name
      total[name] = (total[string.sub(f, 8)] or 0) / total[f]
    end
  end
end

-- Team totals written by this call, for their reps that follow: {team key: {field: value}}.
local written = {}

local function team_values(group)
  local values = written[group]
  if values ~= nil then return values end
  values = {}
  local got = redis.call('HMGET', group, unpack(beside))
  for i, rate in ipairs(beside) do
    if got[i] then values[rate] = tonumber(got[i]) end
  end
  return values
end

-- Copy a team's rates into a rep total that this call does not rewrite.
local function refresh_member(key, values)
  local set, unset = {}, {}
  for _, rate in ipairs(beside) do
    if values[rate] ~= nil then
      set[#set + 1] = 'team_' .. rate
      set[#set + 1] = string.format('%.15g', values[rate])
    else
      unset[#unset + 1] = 'team_' .. rate
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  if #unset > 0 then redis.call('HDEL', key, unpack(unset)) end
end
-- ---- end of targets and rep vs team -----------------------------------------------------------------

local function watermark_of(stored)
  return tonumber(string.sub(stored, 1, string.find(stored, ' ', 1, true) - 1))
end

local function fields_of(stored)
  return cjson.decode(string.sub(stored, string.find(stored, ' ', 1, true) + 1))
end

local position = {}
for i, entry in ipairs(payload.keys) do position[entry[1]] = i end

local changed = {}
for index, entry in ipairs(payload.keys) do
  local key, ttl, partials, group = entry[1], entry[2], entry[3], entry[4]
  if group == cjson.null then group = nil end
  local pkey = key .. '#partials'
  local stored, old_group = {}, nil
  local kv = redis.call('HGETALL', pkey)
  for j = 1, #kv, 2 do
    if kv[j] == '_group' then
      if kv[j + 1] ~= '' then old_group = kv[j + 1] end
    else
      stored[kv[j]] = kv[j + 1]
    end
  end
  local args = {}
  for _, partial in ipairs(partials) do
    local partition, wm, value = tostring(partial[1]), partial[2], partial[3]
    local current = stored[partition]
    if current == nil or wm >= watermark_of(current) then
      stored[partition] = value
      args[#args + 1] = partition
      args[#args + 1] = value
    end
  end
  if #args > 0 then
    if beside ~= nil and group ~= old_group then
      args[#args + 1] = '_group'
      args[#args + 1] = group or ''
      if old_group ~= nil and old_group ~= '' then redis.call('SREM', old_group .. '#members', key) end
      if group ~= nil then
        redis.call('SADD', group .. '#members', key)
        if ttl > 0 then redis.call('EXPIRE', group .. '#members', ttl) end
      end
    end
    redis.call('HSET', pkey, unpack(args))
    local total, order = {}, {}
    for _, value in pairs(stored) do
      for f, v in pairs(fields_of(value)) do
        if total[f] == nil then
          order[#order + 1] = f
          total[f] = 0
        end
        merge_field(total, f, v)
      end
    end
    if spec ~= nil then derive(total, order) end
    add_attainment(total, order)
    if beside ~= nil then
      if group ~= nil then
        local team = team_values(group)
        for _, rate in ipairs(beside) do
          if team[rate] ~= nil then put(total, order, 'team_' .. rate, team[rate]) end
        end
      else
        written[key] = total
      end
    end
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
      redis.call('EXPIRE', pkey, ttl)
    end
    if beside ~= nil and group == nil then
      -- a team total: refresh the copies of its reps that this call does not rewrite after it
      local members = key .. '#members'
      for _, member in ipairs(redis.call('SMEMBERS', members)) do
        if (position[member] or 0) <= index then
          if redis.call('EXISTS', member) == 1 then
            refresh_member(member, total)
          else
            redis.call('SREM', members, member)
          end
        end
      end
    end
    changed[#changed + 1] = {key = key, values = values}
  end
end
if #changed > 0 and channel ~= '' then
  redis.call('PUBLISH', channel, cjson.encode({family = family, updates = changed}))
end
return #changed
