-- wrk reporting hook: one machine-readable line with the numbers the benchmark records.
-- Latencies in microseconds; errors are non-2xx answers plus socket errors.
-- WRK_PAUSE_MS=N: each connection waits N ms after an answer before its next request, which holds
-- the offered load below what the server can do (a steady load, not a saturating one).
local pause = tonumber(os.getenv("WRK_PAUSE_MS") or "")
if pause then
  delay = function() return pause end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.3f p50=%d p99=%d p999=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
