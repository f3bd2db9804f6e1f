-- Every request carries the next of many distinct pre-minted tokens (cache misses until each
-- has been seen once; with more tokens than a run sends, every request is a miss).
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
local offset = tonumber(os.getenv("TOKEN_OFFSET") or "0")
local i = 0
local n = #tokens
function init(args)
  -- A random starting place, unless SEQUENTIAL asks for every token in order (memory test).
  if os.getenv("SEQUENTIAL") then
    i = offset
  else
    i = (offset + math.random(0, n - 1)) % n
  end
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format(nil, nil, { ["Authorization"] = tokens[i] })
end
