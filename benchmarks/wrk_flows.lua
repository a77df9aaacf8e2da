-- wrk script for bench_load.py: GETs the given paths in turn, stops after a number of answers,
-- and counts failed answers by status, the hop they name (x-nexus-broken) and the error the
-- flow report gives for it (numbers blanked, so "timed out after 1,980 ms" is one kind).
--   wrk -t1 -c50 -d600s -s wrk_flows.lua URL -- QUOTA PATH [PATH ...]
-- Says "quota reached" on stderr once it has the answers. Prints, after wrk's own summary, one line per figure: "figure<TAB>name<TAB>value".

local paths, next_path, quota, answered = {}, 0, 0, 0
failed = {} -- global: done() reads each thread's copy with thread:get

function init(args)
  quota = tonumber(args[1])
  for k = 2, #args do
    paths[#paths + 1] = args[k]
  end
end

function request()
  next_path = next_path % #paths + 1
  return wrk.format("GET", paths[next_path])
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 or not body:find('"ok":true', 1, true) then
    local hop = headers["x-nexus-broken"] or headers["X-Nexus-Broken"] or "-"
    local why = (body:match('"error":"([^"]*)"') or ""):gsub("[%d,.]+", "N")
    local key = status .. "\t" .. hop .. "\t" .. why
    failed[key] = (failed[key] or 0) + 1
  end
  if answered == quota then
    -- wrk's main thread sleeps for the whole -d duration: bench_load.py interrupts it on this line
    io.stderr:write("quota reached\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local out = {
    answers = summary.requests,
    seconds = summary.duration / 1e6,
    p50_ms = latency:percentile(50) / 1000,
    p90_ms = latency:percentile(90) / 1000,
    p99_ms = latency:percentile(99) / 1000,
    max_ms = latency.max / 1000,
    socket_errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
  }
  for name, value in pairs(out) do
    io.write(string.format("figure\t%s\t%s\n", name, value))
  end
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("failed")) do
      io.write(string.format("failed\t%d\t%s\n", n, key))
    end
  end
end
