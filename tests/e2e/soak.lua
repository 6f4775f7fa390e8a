-- wrk script of tests/e2e/test_soak.py: POSTs numeric batches of several shapes (one op and
-- many inputs, mixed jobs, both orders, fixed and auto chunks) on kept-alive connections and
-- checks each answer: status 200, one line per job, the summary last with every job ok.
-- done() prints one line for the test: "soak-wrk: requests=N bad=M first=...".

local bodies = {}

local function range(n, f)
  local t = {}
  for i = 0, n - 1 do
    t[#t + 1] = f(i)
  end
  return table.concat(t, ",")
end

bodies[#bodies + 1] = '{"op":"square","inputs":[' .. range(50, tostring) .. ']}'
bodies[#bodies + 1] = '{"op":"sqrt","inputs":[' .. range(500, tostring) .. '],"order":"completed"}'
bodies[#bodies + 1] = '{"op":"is_prime","inputs":[' ..
  range(200, function(i) return tostring(1000003 + 2 * i) end) .. '],"chunksize":16}'
bodies[#bodies + 1] = '{"jobs":[' .. range(40, function(i)
  if i % 4 == 0 then return '{"op":"sort","input":[3,1,2,' .. i .. ']}' end
  if i % 4 == 1 then return '{"op":"factorial","input":' .. (i % 21) .. '}' end
  if i % 4 == 2 then return '{"op":"stats","input":[1,2,3,' .. i .. ']}' end
  return '{"op":"sleep","input":1}'
end) .. '],"order":"completed","chunksize":3}'
bodies[#bodies + 1] = '{"op":"cube","inputs":[' .. range(3000, tostring) .. '],"chunksize":"auto"}'
bodies[#bodies + 1] = '{"op":"collatz_steps","inputs":[' ..
  range(20, function(i) return tostring(i + 1) end) .. '],"timing":true}'

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  requests, bad, first = 0, 0, ""
  k = 0
end

function request()
  k = k + 1
  local b = bodies[(k % #bodies) + 1]
  return wrk.format("POST", "/v1/batches", {["Content-Type"] = "application/json"}, b)
end

local function count(s, pat)
  local n = 0
  for _ in string.gmatch(s, pat) do
    n = n + 1
  end
  return n
end

function response(status, headers, body)
  requests = requests + 1
  local jobs = tonumber(string.match(body, '"summary":{"jobs":(%d+)') or "-1")
  local ok = tonumber(string.match(body, '"ok":(%d+)') or "-2")
  local lines = count(body, '{"index":')
  if status ~= 200 or jobs < 0 or ok ~= jobs or lines ~= jobs or
     string.sub(body, -2) ~= "}\n" then
    bad = bad + 1
    if first == "" then
      first = status .. " " .. string.gsub(string.sub(body, -200), "\n", "\\n")
    end
  end
end

function done(summary, latency, reqs)
  local r, b, f = 0, 0, ""
  for _, t in ipairs(threads) do
    r = r + t:get("requests")
    b = b + t:get("bad")
    if f == "" then
      f = t:get("first")
    end
  end
  io.write(string.format("soak-wrk: requests=%d bad=%d errors=%d first=%s\n", r, b,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout, f))
end
