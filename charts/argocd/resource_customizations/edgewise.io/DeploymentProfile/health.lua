-- Health of an Edgewise DeploymentProfile: has the operator counted its nodes, and does any class have some?
-- Written for Argo CD's default sandbox: no `string` library, so only `..`, tostring and table.
local hs = {}
local status = obj.status

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Edgewise operator to classify the nodes"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Edgewise operator to observe generation " .. tostring(obj.metadata.generation) ..
    " (status is of generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local matched = 0
if status.classes ~= nil then
  for _, class in ipairs(status.classes) do
    if class.nodes ~= nil then
      matched = matched + class.nodes
    end
  end
end
local unmatched = status.unmatchedNodes or 0
-- Like an EdgeModel that matches no node (phase Pending): nothing is wrong yet, nothing can run yet.
if matched == 0 then
  hs.status = "Progressing"
  hs.message = "No node matches a class of the profile yet (" .. tostring(unmatched) .. " node(s) unmatched)"
  return hs
end
hs.status = "Healthy"
hs.message = tostring(status.summary or "") .. " (" .. tostring(unmatched) .. " node(s) unmatched)"
return hs
