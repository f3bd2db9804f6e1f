-- Every request carries the same token (the verified-token cache hits).
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local f = assert(io.open(os.getenv("TOKENS"), "r"))
local token = f:read("*l")
f:close()
wrk.headers["Authorization"] = "Bearer " .. token
