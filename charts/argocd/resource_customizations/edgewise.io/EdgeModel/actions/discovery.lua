-- Rollout commands of an EdgeModel, enabled when the operator would act on them (core/rollout.py).
-- Each writes the `edgewise.io/command` annotation exactly as `kubectl edgewise <verb>` does; none
-- changes the spec, which Git owns (self-heal would revert it: roll back by reverting in Git).
local actions = {}
local canary, pausable, resumable, retryable = false, false, false, false
local rollout = {}
if obj.status ~= nil and obj.status.rollout ~= nil then
  rollout = obj.status.rollout
end
if rollout.classes ~= nil then
  for _, class in ipairs(rollout.classes) do
    if class.canaryRevision ~= nil then
      canary = true
      if not class.pausedByUser then
        pausable = true
      end
    end
    if class.pausedByUser then
      resumable = true
    end
    -- Retry rolls the failed revision out again: only while the spec still asks for another version
    -- than the stable one (after a revert in Git it asks for the stable one: nothing to retry).
    if class.state == "RolledBack" and class.failedRevision ~= nil and class.stableVersion ~= obj.spec.version then
      retryable = true
    end
  end
end

actions["promote"] = {["disabled"] = not canary}
actions["promote-full"] = {["disabled"] = not canary}
actions["abort"] = {["disabled"] = not canary}
actions["pause"] = {["disabled"] = not pausable}
actions["resume"] = {["disabled"] = not resumable}
actions["retry"] = {["disabled"] = not retryable}
return actions
