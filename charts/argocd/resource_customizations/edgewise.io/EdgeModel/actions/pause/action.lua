-- `kubectl edgewise pause` for every class: the same annotation, the same JSON.
-- The id is new with every write to the object (its resourceVersion), so the operator, which
-- handles an id once (status.rollout.lastCommand), handles this command once.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local id = "argocd-pause-" .. (obj.metadata.resourceVersion or "0")
obj.metadata.annotations["edgewise.io/command"] = '{"classes": [], "id": "' .. id .. '", "verb": "pause"}'
return obj
