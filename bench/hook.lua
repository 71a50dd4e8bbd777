-- wrk script: POST one GitHub `issues` delivery, signed as GitHub signs it, under a new
-- X-GitHub-Delivery id per request (the id is not signed, so one signature serves every request;
-- every delivery is a new one to ingest, none a retry).
-- Environment: WRK_BODY_FILE (the delivery's body), WRK_SIGNATURE (its X-Hub-Signature-256).
counter = 0
thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  math.randomseed(os.time() + thread_id * 7919)
  local file = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "issues"
  wrk.headers["X-Hub-Signature-256"] = os.getenv("WRK_SIGNATURE")
end

function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = string.format(
    "d%d-%d-%d", thread_id, counter, math.random(1, 1000000000))
  return wrk.format()
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("JSON {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, "
    .. "\"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d, "
    .. "\"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(99)))
end
