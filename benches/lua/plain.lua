-- No credentials (anonymous route, nginx passthrough, direct upstream).
dofile(os.getenv("LUA_DIR") .. "/common.lua")
