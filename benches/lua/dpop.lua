-- Every request presents the one DPoP-bound token with the next of many pre-minted proofs
-- (each proof is good once: a run that used them all would wrap and be refused as replays,
-- which counts as unexpected statuses).
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local proofs = {}
for line in io.lines(os.getenv("PROOFS")) do
  if #line > 0 then proofs[#proofs + 1] = line end
end
local auth = "DPoP " .. os.getenv("DPOP_TOKEN")
local i = 0
function request()
  i = i + 1
  if i > #proofs then i = 1 end
  return wrk.format(nil, nil, { ["Authorization"] = auth, ["DPoP"] = proofs[i] })
end
