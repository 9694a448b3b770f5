-- Argo CD health check for cogwork.dev/LabelJob (Argo CD runs it with gopher-lua, Lua 5.1).
-- Conditions are the truth: Failed/Stalled -> Degraded, Succeeded -> Healthy, Suspended ->
-- Suspended; anything else is still working -> Progressing. A status older than the spec
-- (observedGeneration behind) is Progressing, so a sync never looks done before the operator
-- has seen it.
local hs = {}
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
  hs.message = "Waiting for the operator to pick up the LabelJob"
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
  hs.message = text(c, "LabelJob failed")
  return hs
end
if is_true(status, "Succeeded") then
  hs.status = "Healthy"
  hs.message = text(condition(status, "Succeeded"), "LabelJob succeeded")
  return hs
end
if is_true(status, "Suspended") then
  hs.status = "Suspended"
  hs.message = text(condition(status, "Suspended"), "LabelJob is suspended")
  return hs
end
hs.status = "Progressing"
hs.message = "LabelJob is " .. (status.phase or "Pending")
return hs
