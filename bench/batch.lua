-- wrk script: POST a batch import of WRK_BATCH_ITEMS seed tasks, each with a unique Company ID.
-- Environment: WRK_BATCH_ITEMS (items per batch), WRK_PREFER (a Prefer header value, optional).
counter = 0
thread_id = 0
local prefer = os.getenv("WRK_PREFER")
local items = tonumber(os.getenv("WRK_BATCH_ITEMS") or "100")

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
  local run = math.random(1, 1000000000)
  local tasks = {}
  for i = 1, items do
    tasks[i] = string.format(
      '{"Company ID": "b%d-%d-%d-%d", "Company Name": "Acme Corp", "Number of Employees": 10, '
        .. '"Contract Value": 10000, "Expected Close Date": "2020-01-31", '
        .. '"International?": false, "Stage": "In Progress", "Assigned To": "user@example.com"}',
      thread_id, counter, run, i)
  end
  return wrk.format(nil, nil, nil, "[" .. table.concat(tasks, ", ") .. "]")
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("JSON {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, "
    .. "\"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d, "
    .. "\"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(99)))
end
