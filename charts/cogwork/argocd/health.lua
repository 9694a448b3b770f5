-- Argo CD health check for every cogwork.dev kind (TrainJob, TuneJob, LabelJob); Argo CD runs
-- it with gopher-lua, Lua 5.1. One script serves all kinds: messages name obj.kind.
-- Conditions are the truth: Failed/Stalled -> Degraded, Succeeded -> Healthy, Suspended ->
-- Suspended; anything else is still working -> Progressing. A status older than the spec
-- (observedGeneration behind) is Progressing, so a sync never looks done before the operator
-- has seen it.
local hs = {}
local kind = obj.kind or "job"
local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end
local function is_true(status, kind)
  local c = condition(status, kind)
  return c ~= nil and c.status == "True"
end
local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the " .. kind
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
if is_true(status, "Failed") or is_true(status, "Stalled") then
  local c = condition(status, "Failed")
  if c == nil or c.status ~= "True" then
    c = condition(status, "Stalled")
  end
  hs.status = "Degraded"
  hs.message = text(c, kind .. " failed")
  return hs
end
if is_true(status, "Succeeded") then
  hs.status = "Healthy"
  hs.message = text(condition(status, "Succeeded"), kind .. " succeeded")
  return hs
end
if is_true(status, "Suspended") then
  hs.status = "Suspended"
  hs.message = text(condition(status, "Suspended"), kind .. " is suspended")
  return hs
end
hs.status = "Progressing"
local detail = ""
if status.nodesText ~= nil then
  detail = ", nodes " .. status.nodesText
elseif status.trialsText ~= nil then
  detail = ", trials " .. status.trialsText
end
hs.message = kind .. " is " .. (status.phase or "Pending") .. detail
return hs
