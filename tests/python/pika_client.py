"""pika (RabbitMQ's Python client) against Spool's AMQP facade. Usage: pika_client.py PORT

Exits non-zero on the first failed check; prints "pika: all ok" at the end.
"""

import subprocess
import sys
import time

import pika
from pika.exceptions import ChannelClosedByBroker

params = pika.ConnectionParameters("127.0.0.1", int(sys.argv[1]), heartbeat=5)


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


def nacked(queue, body):
    """Publishes body to queue on the confirming channel; whether the broker nacked it."""
    try:
        ch.basic_publish("", queue, body)
        return False
    except pika.exceptions.NackError:
        return True


conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()

# Work queue: competing consumers on two channels, manual acks, each message once.
ch.queue_declare("jobs", durable=True)
for i in range(60):
    ch.basic_publish("", "jobs", f"job-{i}".encode(), pika.BasicProperties(delivery_mode=2))
seen = []
workers = [conn.channel() for _ in range(2)]
for w in workers:
    w.basic_qos(prefetch_count=5)
deadline = time.time() + 30
while len(seen) < 60 and time.time() < deadline:
    for w in workers:
        method, props, body = w.basic_get("jobs")
        if method:
            seen.append(body.decode())
            w.basic_ack(method.delivery_tag)
check(sorted(seen) == sorted(f"job-{i}" for i in range(60)), f"each job once: {len(seen)}")

# A worker killed mid-task (SIGKILL: no close, the socket just drops): the four messages it held
# go to the next consumer, flagged redelivered; the others arrive once, not flagged.
WORKER = """
import sys, pika
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", int(sys.argv[1])))
ch = conn.channel()
ch.basic_qos(prefetch_count=4)
ch.basic_consume("tasks", lambda ch, method, props, body: print(body.decode(), flush=True))
ch.start_consuming()
"""
ch.queue_declare("tasks", durable=True)
for i in range(20):
    ch.basic_publish("", "tasks", f"task-{i}".encode(), pika.BasicProperties(delivery_mode=2))
worker = subprocess.Popen([sys.executable, "-c", WORKER, sys.argv[1]], stdout=subprocess.PIPE,
                          text=True)
taken = {worker.stdout.readline().strip() for _ in range(4)}
worker.kill()
worker.wait()
survivor = conn.channel()
survivor.basic_qos(prefetch_count=10)
got = {}
for method, _, body in survivor.consume("tasks", inactivity_timeout=30):
    check(method is not None, f"only {len(got)} of 20 tasks arrived")
    check(body.decode() not in got, f"{body} delivered twice")
    got[body.decode()] = method.redelivered
    survivor.basic_ack(method.delivery_tag)
    if len(got) == 20:
        break
survivor.cancel()
check(set(got) == {f"task-{i}" for i in range(20)}, f"tasks {sorted(got)}")
check({b for b, again in got.items() if again} == taken, f"redelivered {got}, killed worker held {taken}")

# Properties and headers come back as published.
ch.queue_declare("props")
props = pika.BasicProperties(content_type="application/json", correlation_id="c-7",
                             reply_to="answers", headers={"tenant": "acme", "n": 3})
ch.basic_publish("", "props", b"{}", props)
method, got, body = ch.basic_get("props", auto_ack=True)
check(got.content_type == "application/json" and got.correlation_id == "c-7", "properties")
check(got.reply_to == "answers" and got.headers == {"tenant": "acme", "n": 3}, f"headers {got.headers}")

# Priorities: higher first on a priority queue (capped at x-max-priority); a plain queue keeps
# publish order, as RabbitMQ's does.
for queue, args, expected in [("prio", {"x-max-priority": 5}, ["p5", "p9", "p1"]),
                              ("plain", None, ["p1", "p5", "p9"])]:
    ch.queue_declare(queue, arguments=args)
    for p in [1, 5, 9]:
        ch.basic_publish("", queue, f"p{p}".encode(), pika.BasicProperties(priority=p))
    order = [ch.basic_get(queue, auto_ack=True)[2].decode() for _ in range(3)]
    check(order == expected, f"{queue} order {order}")

# Per-queue TTL: an expired message is never delivered.
ch.queue_declare("short", arguments={"x-message-ttl": 1})
ch.basic_publish("", "short", b"stale")
time.sleep(0.05)  # the TTL itself is the subject: let 1 ms pass
check(ch.basic_get("short", auto_ack=True)[0] is None, "expired message delivered")

# Delivery limit: after two deliveries the message is dropped.
ch.queue_declare("limited", arguments={"x-delivery-limit": 2})
ch.basic_publish("", "limited", b"poison")
for _ in range(2):
    method, _, _ = ch.basic_get("limited")
    check(method is not None, "delivery within the limit")
    ch.basic_nack(method.delivery_tag, requeue=True)
check(ch.basic_get("limited")[0] is None, "delivered past the limit")

# Dead-lettering: rejected, expired and over-limit messages go to the dead-letter exchange with
# RabbitMQ's x-death history.
ch.exchange_declare("dlx", "direct")
ch.queue_declare("dead.letters")
ch.queue_bind("dead.letters", "dlx", "dead")
dl = {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}
ch.queue_declare("work.dl", arguments=dl)
ch.queue_declare("ttl.dl", arguments={**dl, "x-message-ttl": 1})
ch.queue_declare("limit.dl", arguments={**dl, "x-delivery-limit": 1})
ch.queue_declare("full.dl", arguments={**dl, "x-max-length": 1, "x-overflow": "reject-publish-dlx"})
check(not nacked("full.dl", b"fits"), "reject-publish-dlx refused a publish that fits")
check(nacked("full.dl", b"overflow"), "reject-publish-dlx accepted a publish beyond x-max-length")
ch.basic_publish("", "work.dl", b"refused")
method, _, _ = ch.basic_get("work.dl")
ch.basic_reject(method.delivery_tag, requeue=False)
ch.basic_publish("", "ttl.dl", b"too-late")
ch.basic_publish("", "limit.dl", b"poison")
method, _, _ = ch.basic_get("limit.dl")
ch.basic_nack(method.delivery_tag, requeue=True)
check(ch.basic_get("limit.dl")[0] is None, "delivered past the limit")
dead = {}
deadline = time.time() + 10
while len(dead) < 4 and time.time() < deadline:
    method, props, body = ch.basic_get("dead.letters", auto_ack=True)
    if method:
        dead[body.decode()] = (method, props)
check(set(dead) == {"refused", "too-late", "poison", "overflow"}, f"dead letters {sorted(dead)}")
for body, (queue, reason) in {"refused": ("work.dl", "rejected"), "too-late": ("ttl.dl", "expired"),
                              "poison": ("limit.dl", "delivery_limit"),
                              "overflow": ("full.dl", "rejected")}.items():
    method, props = dead[body]
    death = props.headers["x-death"][0]
    check(death["queue"] == queue and death["reason"] == reason and death["count"] == 1,
          f"x-death of {body}: {death}")
    check(death["routing-keys"] == [queue] and props.headers["x-first-death-reason"] == reason,
          f"x-death routing keys of {body}: {props.headers}")
    check(method.exchange == "dlx" and method.routing_key == "dead", f"{body} routed {method}")

# A retry loop, the usual TTL and DLX chain: a message rejected from "orders" waits in
# "orders.retry" (TTL 50 ms), whose expiry dead-letters it back to "orders" through the default
# exchange; x-death keeps one entry per queue and reason, counting the passes, newest first.
ch.queue_declare("orders", arguments={"x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": "orders.retry"})
ch.queue_declare("orders.retry", arguments={"x-dead-letter-exchange": "", "x-message-ttl": 50,
                                            "x-dead-letter-routing-key": "orders"})
ch.basic_publish("", "orders", b"flaky")
for attempt in range(3):
    deadline = time.time() + 10
    method = None
    while method is None and time.time() < deadline:
        method, props, body = ch.basic_get("orders")
    check(method is not None and body == b"flaky", f"attempt {attempt} never came back")
    deaths = [(d["queue"], d["reason"], d["count"]) for d in (props.headers or {}).get("x-death", [])]
    want = [("orders.retry", "expired", attempt), ("orders", "rejected", attempt)] if attempt else []
    check(deaths == want, f"x-death at attempt {attempt}: {deaths}")
    if attempt:
        check(props.headers["x-first-death-queue"] == "orders", f"first death {props.headers}")
    ch.basic_reject(method.delivery_tag, requeue=False)

# x-max-length: drop-head keeps the newest; reject-publish nacks the publish that overflows.
ch.queue_declare("capped", arguments={"x-max-length": 2})
for b in [b"1", b"2", b"3"]:
    ch.basic_publish("", "capped", b)
kept = [ch.basic_get("capped", auto_ack=True)[2] for _ in range(2)]
check(kept == [b"2", b"3"] and ch.basic_get("capped")[0] is None, f"drop-head kept {kept}")
ch.queue_declare("full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
check(not nacked("full", b"first"), "reject-publish refused a publish that fits")
check(nacked("full", b"second"), "reject-publish accepted a publish beyond x-max-length")
check(ch.basic_get("full", auto_ack=True)[2] == b"first" and ch.basic_get("full")[0] is None,
      "reject-publish queue content")

# Auto-delete: the queue goes with its last consumer. x-expires: an unused queue goes after the
# time. Both are server-side effects with no notification, so each is polled with a bound; a
# mandatory publish (not a redeclare, which would renew x-expires) tells whether it still exists.
def gone(queue, within=10):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            ch.basic_publish("", queue, b"probe", mandatory=True)
        except pika.exceptions.UnroutableError:
            return True
    return False

ch.queue_declare("ephemeral", auto_delete=True)
tag = ch.basic_consume("ephemeral", lambda *a: None)
ch.basic_cancel(tag)
check(gone("ephemeral"), "auto-delete queue outlived its last consumer")
ch.queue_declare("expiring", arguments={"x-expires": 300})
check(gone("expiring"), "x-expires queue was not deleted")

# Errors: 404 for a passive declare of a missing queue, 406 for an unknown delivery tag.
bad = conn.channel()
try:
    bad.queue_declare("nowhere", passive=True)
    sys.exit("FAILED: passive declare of a missing queue succeeded")
except ChannelClosedByBroker as e:
    check(e.reply_code == 404 and "NOT_FOUND" in e.reply_text, f"404: {e}")
bad = conn.channel()
bad.basic_ack(42)
try:
    bad.queue_declare("jobs", durable=True)
    sys.exit("FAILED: unknown delivery tag was accepted")
except ChannelClosedByBroker as e:
    check(e.reply_code == 406 and "unknown delivery tag 42" in e.reply_text, f"406: {e}")

check(conn.is_open, "the connection survives channel errors")
conn.close()

# Authentication: a wrong password is refused.
try:
    pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", int(sys.argv[1]), credentials=pika.PlainCredentials("guest", "wrong")))
    sys.exit("FAILED: wrong password accepted")
except pika.exceptions.ProbableAuthenticationError:
    pass

print("pika: all ok")
