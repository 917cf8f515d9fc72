-- wrk script of benchmarks/gateway_bench.py: POST the JSON bodies of the file named by
-- $WRK_BODIES (one per line) in turn, tally status codes, and print one JSON line at the end.
-- With WRK_VERSIONS=1 it also counts the "version" field of each 2xx answer (swap cell).
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do
  if #line > 0 then bodies[#bodies + 1] = line end
end
if #bodies == 0 then error("no request bodies in " .. os.getenv("WRK_BODIES")) end
local count_versions = os.getenv("WRK_VERSIONS") == "1"
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  idx = 0
  statuses = {}
  shed_without_retry_after = 0
  versions = {}
end

function request()
  idx = idx % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[idx])
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 503 and headers["Retry-After"] == nil and headers["retry-after"] == nil then
    shed_without_retry_after = shed_without_retry_after + 1
  end
  if count_versions and status < 300 then
    local v = string.match(body, '"version"%s*:%s*"?(%d+)')
    v = v or "none"
    versions[v] = (versions[v] or 0) + 1
  end
end

local function merge(into, from)
  for k, n in pairs(from or {}) do into[k] = (into[k] or 0) + n end
end

local function encode(t)
  local parts = {}
  for k, n in pairs(t) do parts[#parts + 1] = string.format('"%s":%d', k, n) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local all_statuses, all_versions, no_retry_after = {}, {}, 0
  for _, thread in ipairs(threads) do
    merge(all_statuses, thread:get("statuses"))
    merge(all_versions, thread:get("versions"))
    no_retry_after = no_retry_after + (thread:get("shed_without_retry_after") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_p50_us":%d,"lat_p90_us":%d,' ..
    '"lat_p99_us":%d,"lat_mean_us":%.1f,"lat_max_us":%d,"statuses":%s,"versions":%s,' ..
    '"shed_without_retry_after":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, encode(all_statuses),
    encode(all_versions), no_retry_after))
end
