-- wrk script: POST the seed task with a unique Company ID per request.
-- Environment: WRK_PREFER (a Prefer header value, optional). Closed loop: no delay() function.
-- Globals, not locals: setup() sets `thread_id` in each thread's own Lua state.
counter = 0
thread_id = 0
local prefer = os.getenv("WRK_PREFER")

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  math.randomseed(os.time() + thread_id * 7919)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if prefer and prefer ~= "" then
    wrk.headers["Prefer"] = prefer
  end
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"Company ID": "t%d-%d-%d", "Company Name": "Acme Corp", "Number of Employees": 10, '
      .. '"Contract Value": 10000, "Expected Close Date": "2020-01-31", "International?": false, '
      .. '"Stage": "In Progress", "Assigned To": "user@example.com"}',
    thread_id, counter, math.random(1, 1000000000))
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("JSON {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, "
    .. "\"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d, "
    .. "\"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(99)))
end
