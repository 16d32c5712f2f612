#!/usr/bin/env python3
"""Time from a partition actor's crash to the first request it serves again.

Crashes partition P of TOPIC N times through a debug build's `POST /debug/faults`, and after each
crash asks for the partition's last record over HTTP as fast as it can until one answer is 200.
Prints p50 and max in milliseconds. Usage:

    restart_latency.py HTTP_PORT TOPIC [PARTITION] [N]

The time includes the HTTP round trips (one every ~0.2 ms on loopback), so it overstates the
restart itself by at most one of them.
"""
import http.client
import json
import statistics
import sys
import time

port, topic = int(sys.argv[1]), sys.argv[2]
partition = int(sys.argv[3]) if len(sys.argv) > 3 else 0
n = int(sys.argv[4]) if len(sys.argv) > 4 else 100
conn = http.client.HTTPConnection("127.0.0.1", port)


def call(method, path, body=None):
    conn.request(method, path, body=body, headers={"content-type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


status, body = call("GET", f"/topics/{topic}")
info = json.loads(body)
end = [p for p in info["partitions"] if p["partition"] == partition][0]
print(f"partition {topic}-{partition}: {json.dumps(end)}")
last = max(0, end["high_watermark"] - 1)
read = f"/topics/{topic}/partitions/{partition}/records?offset={last}&max_bytes=1&timeout_ms=0"
fault = json.dumps({"actor": "partition", "topic": topic, "partition": partition})
times = []
for _ in range(n):
    status, body = call("POST", "/debug/faults", fault)
    assert status == 204, (status, body)
    crashed = time.monotonic()
    while True:
        status, _ = call("GET", read)
        if status == 200:
            break
    times.append((time.monotonic() - crashed) * 1000)
times.sort()
print(f"crashes={n} p50_ms={statistics.median(times):.2f} p90_ms={times[int(n * 0.9) - 1]:.2f} "
      f"max_ms={times[-1]:.2f}")
