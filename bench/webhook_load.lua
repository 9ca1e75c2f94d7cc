-- wrk script for the webhook benchmark: POSTs Paubox-shaped events; every tenth request repeats
-- the thread's latest event (a duplicate, often still in flight on another connection).
-- Arguments (after --): first message index, number of messages, threads, first event id.
-- Distinct event j of thread t is global event g = t + threads * j; its message is g % messages.
-- done() prints one line "BENCH {...}" with each thread's counts for the harness to verify.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local first, messages, nthreads, base
generated, distinct, responses, non200 = 0, 0, 0, 0
local last_body = nil

function init(args)
   first = tonumber(args[1])
   messages = tonumber(args[2])
   nthreads = tonumber(args[3])
   base = tonumber(args[4])
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

local names = { "api_mail_log_delivered", "api_mail_log_opened" }

local function event(g)
   local m = first + (g % messages)
   local round = math.floor(g / messages)
   local name = names[(round % 2) + 1]
   local seconds = g % 60
   return string.format(
      '{"event_name":"%s","payload":{"id":%d,"subject":"Appointment reminder",'
      .. '"header_message_id":"<%d@clinic.example>","source_tracking_id":"%s",'
      .. '"outbound_queue_id":"Q%012d","time":"2024-04-18T20:%02d:%02d.379Z",'
      .. '"from":"reminders@clinic.example","to":"patient%d@example.com",'
      .. '"custom_headers":{}}}',
      name, base + g, g, string.format("00000000-0000-4000-8000-%012d", m), g,
      round % 60, seconds, m)
end

function request()
   local body
   if generated % 10 == 9 and last_body ~= nil then
      body = last_body
   else
      body = event(tid + nthreads * distinct)
      distinct = distinct + 1
      last_body = body
   end
   generated = generated + 1
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   responses = responses + 1
   if status ~= 200 then
      non200 = non200 + 1
   end
end

function done(summary, latency, requests)
   local parts = {}
   for _, thread in ipairs(threads) do
      table.insert(parts, string.format(
         '{"tid":%d,"generated":%d,"distinct":%d,"responses":%d,"non200":%d}',
         thread:get("tid"), thread:get("generated"), thread:get("distinct"),
         thread:get("responses"), thread:get("non200")))
   end
   io.write(string.format(
      'BENCH {"threads":[%s],"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
      table.concat(parts, ","), latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, summary.requests, summary.duration,
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout))
end
