-- Health of an Edgewise EdgeModel, from the status its operator writes (edgewise.io/v1alpha1).
-- Written for Argo CD's default sandbox: no `string` library, so only `..`, tostring and table.
local hs = {}
local status = obj.status

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Edgewise operator to observe the EdgeModel"
  return hs
end
-- A status of an older spec says nothing about the new one.
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Edgewise operator to observe generation " .. tostring(obj.metadata.generation) ..
    " (status is of generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end

-- "<class>: <message>" for every class of the rollout in `state`, joined by "; ".
local function classes_in(state)
  local found = {}
  if status.rollout ~= nil and status.rollout.classes ~= nil then
    for _, class in ipairs(status.rollout.classes) do
      if class.state == state then
        local message = class.message
        if message == nil or message == "" then
          message = state
        end
        table.insert(found, class.name .. ": " .. message)
      end
    end
  end
  return table.concat(found, "; ")
end

local function describe(condition)
  if condition.message == nil or condition.message == "" then
    return condition.reason
  end
  return condition.reason .. ": " .. condition.message
end

-- Worst first: a rollback or a degraded class outweighs a paused or progressing one.
local degraded = conditions["Degraded"]
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end
local rolled_back = classes_in("RolledBack")
if rolled_back ~= "" then
  hs.status = "Degraded"
  hs.message = "RolledBack: " .. rolled_back
  return hs
end
local failing = classes_in("Degraded")
if failing ~= "" then
  hs.status = "Degraded"
  hs.message = "RolloutDegraded: " .. failing
  return hs
end
if status.phase == "Degraded" or status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "EdgeModel is " .. status.phase
  return hs
end

local paused = classes_in("Paused")
if paused ~= "" then
  hs.status = "Suspended"
  hs.message = paused
  return hs
end

local progressing = conditions["Progressing"]
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  return hs
end
local rolling = classes_in("Progressing")
if rolling ~= "" then
  hs.status = "Progressing"
  hs.message = rolling
  return hs
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

-- Pending (no node matches a class yet) or pods not ready: wait, saying why.
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "EdgeModel is " .. tostring(status.phase)
end
return hs
