"""kafka-python against a running Spool broker: produce with every codec and with
idempotence, keyed ordering, consume by offset/time, and the admin API (error codes included).

Usage: python3 kafka_python_client.py HOST:PORT   (exits non-zero on the first failure)
"""
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import (CommitFailedError, InvalidPartitionsError, RebalanceInProgressError,
                          TopicAlreadyExistsError)

BOOTSTRAP = sys.argv[1]


def consume(topic, partition, count, offset=None):
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=20000)
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    if offset is None:
        c.seek_to_beginning(tp)
    else:
        c.seek(tp, offset)
    out = []
    for m in c:
        out.append(m)
        if len(out) == count:
            break
    c.close()
    assert len(out) == count, f"{topic}-{partition}: got {len(out)} of {count}"
    return out


def codecs():
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        topic = f"py-codec-{codec or 'none'}"
        p = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type=codec, linger_ms=5)
        futures = [
            p.send(topic, value=f"{codec}-{i}".encode(), headers=[("n", str(i).encode())]) for i in range(300)
        ]
        offsets = [f.get(timeout=30).offset for f in futures]
        assert offsets == list(range(300)), offsets[:5]
        p.close()
        got = consume(topic, 0, 300)
        assert [m.value.decode() for m in got] == [f"{codec}-{i}" for i in range(300)]
        assert got[7].headers == [("n", b"7")]
        print(f"codec {codec}: ok")


def idempotent():
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True, acks="all")
    futures = [p.send("py-idem", value=str(i).encode()) for i in range(1000)]
    for f in futures:
        f.get(timeout=30)
    p.close()
    got = consume("py-idem", 0, 1000)
    assert [int(m.value) for m in got] == list(range(1000))
    print("idempotence: ok")


def keyed_and_times(admin):
    admin.create_topics([NewTopic("py-keyed", 4, 1)])
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    base = 1_700_000_000_000
    where = {}
    counts = {}
    for i in range(200):
        key = f"k{i % 5}"
        md = p.send("py-keyed", key=key.encode(), value=f"{key}:{i}".encode(), timestamp_ms=base + i).get(timeout=30)
        assert where.setdefault(key, md.partition) == md.partition, f"{key} moved partitions"
        counts[md.partition] = counts.get(md.partition, 0) + 1
    p.close()
    for partition, n in counts.items():
        last = {}
        for m in consume("py-keyed", partition, n):
            key, seq = m.value.decode().split(":")
            assert last.get(key, -1) < int(seq), "order within a key"
            last[key] = int(seq)
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    tps = [TopicPartition("py-keyed", p) for p in counts]
    ends = c.end_offsets(tps)
    assert sum(ends.values()) == 200, ends
    assert all(v == 0 for v in c.beginning_offsets(tps).values())
    found = c.offsets_for_times({tp: base + 150 for tp in tps})
    for tp, ot in found.items():
        if ot is not None:
            assert ot.timestamp >= base + 150
    c.close()
    print("keyed ordering and offsets by time: ok")


def admin_api(admin):
    admin.create_topics([NewTopic("py-admin", 2, 1, topic_configs={"retention.ms": "3600000"})])
    try:
        admin.create_topics([NewTopic("py-admin", 2, 1)])
        raise AssertionError("duplicate topic accepted")
    except TopicAlreadyExistsError:
        pass
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-admin")])
    entries = res["topic"]["py-admin"]
    assert entries["retention.ms"]["value"] == "3600000", entries
    assert entries["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", entries
    for incremental in (True, False):
        resp = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "py-admin", configs={"no.such": "1"})],
            raise_on_unknown=False, incremental=incremental)
        outcome = resp["topic"]["py-admin"]
        assert "[Error 40]" in str(outcome), f"INVALID_CONFIG expected, got {outcome!r}"
    resp = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py-admin", configs={"retention.ms": "60000"})])
    outcome = resp["topic"]["py-admin"]
    assert "Error" not in str(outcome), f"alter failed: {outcome!r}"
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-admin")])
    assert res["topic"]["py-admin"]["retention.ms"]["value"] == "60000"
    admin.create_partitions({"py-admin": NewPartitions(4)})
    try:
        admin.create_partitions({"py-admin": NewPartitions(2)})
        raise AssertionError("shrinking accepted")
    except InvalidPartitionsError:
        pass
    assert len(admin.describe_topics(["py-admin"])[0]["partitions"]) == 4
    admin.delete_topics(["py-admin"])
    deadline = time.time() + 10
    while "py-admin" in admin.list_topics():
        assert time.time() < deadline, "topic still listed after delete"
        time.sleep(0.05)
    print("admin: ok")


def fetch_sessions(admin):
    """KIP-227: a consumer of many partitions opens a session, then sends incremental fetches
    that name only what moved; every record still arrives once, in order per partition."""
    from kafka.consumer import fetcher

    seen = []
    original = fetcher.FetchSessionHandler.handle_response

    def recording(self, response):
        full = self.next_metadata.is_full
        ok = original(self, response)
        seen.append((full, response.session_id, ok))
        return ok

    fetcher.FetchSessionHandler.handle_response = recording
    try:
        admin.create_topics([NewTopic("py-sessions", num_partitions=8, replication_factor=1)])
        p = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5)
        c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, fetch_max_wait_ms=100)
        tps = [TopicPartition("py-sessions", i) for i in range(8)]
        c.assign(tps)
        c.seek_to_beginning()
        got = {i: [] for i in range(8)}

        def drain(expected):
            deadline = time.time() + 30
            while sum(len(v) for v in got.values()) < expected and time.time() < deadline:
                for tp, msgs in c.poll(timeout_ms=500).items():
                    got[tp.partition].extend(int(m.value) for m in msgs)

        for i in range(8 * 50):
            p.send("py-sessions", value=str(i).encode(), partition=i % 8)
        p.flush()
        drain(8 * 50)
        # Idle fetches: the session answers with no partitions at all.
        idle_from = len(seen)
        deadline = time.time() + 30
        while len(seen) < idle_from + 3 and time.time() < deadline:
            assert not c.poll(timeout_ms=200), "records from nowhere"
        # Only partition 3 moves now: the others stay quiet in the session.
        for i in range(8 * 50, 8 * 50 + 100):
            p.send("py-sessions", value=str(i).encode(), partition=3)
        p.flush()
        drain(8 * 50 + 100)
        c.close()
        p.close()
    finally:
        fetcher.FetchSessionHandler.handle_response = original
    for i in range(8):
        want = [n for n in range(8 * 50) if n % 8 == i]
        if i == 3:
            want += list(range(8 * 50, 8 * 50 + 100))
        assert got[i] == want, f"partition {i}: {got[i][:10]}..."
    assert all(ok for _, _, ok in seen), f"a fetch response broke the session: {seen}"
    incremental = [s for full, s, _ in seen if not full]
    assert incremental and all(s != 0 for s in incremental), f"no incremental fetches: {seen[:5]}"
    print(f"fetch sessions: ok ({len(incremental)} incremental fetches)")


def consumer_groups(admin):
    """Two consumers share a 6-partition topic in one group (no partition held by both, no record
    skipped); after they commit and leave, a new member resumes exactly after the commits."""
    admin.create_topics([NewTopic("py-group", num_partitions=6, replication_factor=1)])
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5)
    for i in range(600):
        p.send("py-group", value=str(i).encode(), partition=i % 6)
    p.flush()

    def member():
        return KafkaConsumer("py-group", bootstrap_servers=BOOTSTRAP, group_id="py-g",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=10000, heartbeat_interval_ms=500)

    # Each member polls on its own thread, as applications run them.
    seen, assignments, done = [], {}, threading.Event()
    lock = threading.Lock()

    def run(name):
        c = member()
        while not done.is_set():
            for _, msgs in c.poll(timeout_ms=500).items():
                with lock:
                    seen.extend(int(m.value) for m in msgs)
            try:
                c.commit()
            except (RebalanceInProgressError, CommitFailedError):
                pass  # the client refuses while it rejoins; the next poll completes the rebalance
            with lock:
                assignments[name] = set(c.assignment())
        c.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()

    def settled():
        with lock:
            pa, pb = assignments.get("a"), assignments.get("b")
            return len(seen) >= 600 and pa and pb and not (pa & pb) and len(pa | pb) == 6

    deadline = time.time() + 60
    while not settled() and time.time() < deadline:
        time.sleep(0.05)
    ok = settled()
    done.set()
    for t in threads:
        t.join()
    assert sorted(set(seen)) == list(range(600)), f"missing: {sorted(set(range(600)) - set(seen))[:10]}"
    assert ok, f"assignments {assignments}"
    for i in range(600, 660):
        p.send("py-group", value=str(i).encode(), partition=i % 6)
    p.flush()
    p.close()
    c = member()
    later = []
    deadline = time.time() + 60
    while len(later) < 60 and time.time() < deadline:
        for _, msgs in c.poll(timeout_ms=200).items():
            later.extend(int(m.value) for m in msgs)
    c.commit()
    c.close()
    assert sorted(later) == list(range(600, 660)), f"resumed with {sorted(later)[:10]}"
    groups = {g[0] if isinstance(g, tuple) else g["group_id"] for g in admin.list_groups()}
    assert "py-g" in groups, groups
    offsets = admin.list_group_offsets("py-g")["py-g"]
    assert sum(o.offset for o in offsets.values()) == 660, offsets
    print("consumer groups: ok")


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    codecs()
    idempotent()
    keyed_and_times(admin)
    admin_api(admin)
    fetch_sessions(admin)
    consumer_groups(admin)
    admin.close()
    print("kafka-python: all ok")


if __name__ == "__main__":
    main()
