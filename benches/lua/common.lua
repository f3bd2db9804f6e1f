-- Shared by every scenario: count responses whose status is not the expected one, so a fast
-- wrong answer cannot pass, and report it in a line load.sh parses.
expected = tonumber(os.getenv("EXPECT_STATUS") or "200")
local threads = {}
bad = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= expected then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (t:get("bad") or 0)
  end
  io.write(string.format("UNEXPECTED_STATUS %d\n", total))
end
