-- wrk script: POSTs pre-signed Stripe webhooks (one per line of $INGEST_BENCH_FILE: "<signature>\t<body>").
local requests = {}
local i = 0
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local path = os.getenv("INGEST_BENCH_FILE")
  local thread_count = tonumber(os.getenv("INGEST_BENCH_THREADS") or "2")
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    -- each thread takes every thread_count-th line so no two threads send the same event
    if (n % thread_count) == (id or 0) then
      local tab = string.find(line, "\t", 1, true)
      local sig = string.sub(line, 1, tab - 1)
      local body = string.sub(line, tab + 1)
      requests[#requests + 1] = wrk.format("POST", "/webhooks/stripe",
        {["Content-Type"] = "application/json", ["Stripe-Signature"] = sig}, body)
    end
  end
end

function request()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
