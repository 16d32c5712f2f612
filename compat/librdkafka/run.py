#!/usr/bin/env python3
"""Runs librdkafka's own integration test suite against a fresh Spool broker.

librdkafka's source, tests/ included, ships in the rdkafka-sys crate that cargo already
downloads for the rdkafka dev-dependency. This runner finds it with `cargo metadata`, builds
librdkafka and its tests/test-runner in a copy under target/compat/, starts `spool serve` on free
ports with an empty data directory, points the suite at it with a test.conf, and runs broker tests
in full mode (never -Q, which skips most subtests), sockem tests included. The suite selects tests
by number, so each process runs every test of one number (0045 has five), one after another (-p1);
each test's outcome is read from the runner's output.

A test names the broker scenario it needs (test.c's `.scenario`): "default" (topics auto-created
with 4 partitions) or "noautocreate". Each scenario in the selection gets its own broker. Tests
that shell out to Kafka's bin/kafka-topics.sh get kafka/bin/kafka-topics.sh beside this script,
which does the same through the admin API with kafka-python.

    compat/librdkafka/run.py                  # the allow-list; exits 1 if any allowed test fails
    compat/librdkafka/run.py --all            # every broker test; writes a summary, never fails
    compat/librdkafka/run.py 0001 0042        # just these (by number or name)

Options: -j N runs N tests at once (against their scenario's broker); --spool PATH uses that
binary instead of building target/debug/spool. Logs: target/compat/results/<number>.log (or
<number>-<scenario>.log), and the brokers' in broker-<scenario>.log.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ALLOW_LIST = HERE / "allow-list"
# Cargo's target directory (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
WORK = TARGET / "compat"
RESULTS = WORK / "results"
# The broker version the suite is told: Spool serves Kafka 4's API versions (no pre-v2 message
# formats), so tests gated on 4.0 behaviour take the 4.0 path.
BROKER_VERSION = "4.0.0.0"
# Longest a single test may run before it counts as failed (hung).
TEST_TIMEOUT_S = 900
# The suite's broker scenarios (tests/scenarios/*.json) as Spool flags.
SCENARIOS = {
    "default": ["--auto-create-topics", "true"],
    "noautocreate": ["--auto-create-topics", "false"],
}
# The longest tests, started first so that -j N finishes sooner.
SLOW_FIRST = ["0113", "0089", "0091", "0076", "0094", "0045"]
# Stands in for Apache Kafka's install: the suite runs $KAFKA_PATH/bin/kafka-topics.sh.
KAFKA_PATH = HERE / "kafka"


def log(msg):
    print(msg, flush=True)


def rdkafka_sys_source():
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    for p in json.loads(meta.stdout)["packages"]:
        if p["name"] == "rdkafka-sys":
            return Path(p["manifest_path"]).parent / "librdkafka", p["version"]
    sys.exit("rdkafka-sys is not in the cargo metadata: is rdkafka a dev-dependency?")


def build_suite():
    """Builds librdkafka and tests/test-runner in target/compat once per rdkafka-sys version."""
    src, version = rdkafka_sys_source()
    build = WORK / f"librdkafka-{version}"
    runner = build / "tests" / "test-runner"
    if runner.exists():
        return build
    log(f"building librdkafka's test suite from {src} in {build} (a few minutes, once)")
    if build.exists():
        shutil.rmtree(build)
    shutil.copytree(src, build)
    jobs = str(os.cpu_count() or 2)
    quiet = {"stdout": subprocess.DEVNULL}
    subprocess.run(["./configure", "--disable-curl", "--disable-sasl"], cwd=build, check=True, **quiet)
    subprocess.run(["make", "-j", jobs, "libs"], cwd=build, check=True, **quiet)
    subprocess.run(["make", "-j", jobs, "-C", "tests", "build"], cwd=build, check=True, **quiet)
    return build


def broker_tests(build):
    """The suite's tests that need a broker, each with its scenario: every entry of test.c's
    table not flagged local (needs no broker) or manual (runs until stopped, such as 8000_idle)."""
    text = (build / "tests" / "test.c").read_text()
    table = text[text.index("struct test tests[] = {"):]
    tests = {}
    for entry in table.split("_TEST(")[1:]:
        m = re.match(r"\s*(\d{4}\w*)\s*,\s*([^,]*)", entry)
        if not m or "TEST_F_LOCAL" in m.group(2) or "TEST_F_MANUAL" in m.group(2):
            continue
        wanted = re.search(r'\.scenario\s*=\s*"([^"]*)"', entry)
        scenarios = wanted.group(1).split(",") if wanted else ["default"]
        tests[m.group(1)] = next(s for s in scenarios + ["default"] if s in SCENARIOS)
    return tests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(spool, data_dir, scenario):
    port = free_port()
    log_file = open(RESULTS / f"broker-{scenario}.log", "w")
    proc = subprocess.Popen(
        [
            str(spool), "serve",
            "--data-dir", str(data_dir),
            "--kafka-addr", f"127.0.0.1:{port}",
            "--amqp-addr", f"127.0.0.1:{free_port()}",
            "--http-addr", f"127.0.0.1:{free_port()}",
            # The suite's scenarios all create topics with 4 partitions.
            "--num-partitions", "4",
            "--group-initial-rebalance-delay-ms", "0",
            *SCENARIOS[scenario],
        ],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"spool exited with {proc.returncode}; see {log_file.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("spool did not start listening within 30 s")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def outcome(name, output):
    """PASSED, SKIPPED or FAILED for one test, from the runner's output."""
    if f"Test {name} PASSED" in output:
        return "PASSED"
    if re.search(rf"^\[{re.escape(name)}\s+/[^]]*\] WARN: SKIPPING TEST", output, re.M):
        return "SKIPPED"
    return "FAILED"


def run_number(build, broker, number, scenario, names):
    """Runs every test of one number and scenario in one process; (name, outcome) for those in
    `names`."""
    start = time.time()
    env = dict(
        os.environ,
        TESTS=number,
        RDKAFKA_TEST_CONF=str(broker["conf"]),
        TEST_KAFKA_VERSION=BROKER_VERSION,
        KAFKA_PATH=str(KAFKA_PATH),
        BROKERS=broker["bootstrap"],
        # The runner links the freshly built shared libraries.
        LD_LIBRARY_PATH=f"{build / 'src'}:{build / 'src-cpp'}",
    )
    try:
        p = subprocess.run(
            ["./test-runner", "-p1", "-L", "-V", BROKER_VERSION, "-s", scenario, number],
            cwd=build / "tests", env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S,
        )
        output = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += f"\n(runner: timed out after {TEST_TIMEOUT_S} s)\n"
    output = ANSI.sub("", output)
    suffix = "" if scenario == "default" else f"-{scenario}"
    (RESULTS / f"{number}{suffix}.log").write_text(output)
    return [(n, outcome(n, output)) for n in names], time.time() - start


def read_allow_list():
    names = []
    for line in ALLOW_LIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tests", nargs="*", help="test numbers or names (default: the allow-list)")
    ap.add_argument("--all", action="store_true", help="every broker test of the suite")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="tests run at once")
    ap.add_argument("--spool", help="spool binary (default: build target/debug/spool)")
    args = ap.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    build = build_suite()
    every = broker_tests(build)
    if args.all:
        selected = list(every)
    elif args.tests:
        selected = [t for t in every if any(t.startswith(w) for w in args.tests)]
    else:
        selected = read_allow_list()
        unknown = [t for t in selected if t not in every]
        if unknown:
            sys.exit(f"allow-list names tests the suite does not have: {unknown}")
    if args.spool:
        spool = Path(args.spool)
    else:
        subprocess.run(["cargo", "build", "--quiet", "--bin", "spool"], cwd=ROOT, check=True)
        spool = TARGET / "debug" / "spool"

    # One process per (number, scenario), one broker per scenario.
    groups = {}
    for t in selected:
        groups.setdefault((t[:4], every[t]), []).append(t)
    brokers = {}
    results = {}
    started = time.time()
    try:
        for scenario in sorted({sc for _, sc in groups}):
            data_dir = Path(tempfile.mkdtemp(prefix=f"spool-compat-{scenario}-"))
            proc, port = start_broker(spool, data_dir, scenario)
            conf = WORK / f"test-{scenario}.conf"
            conf.write_text(f"bootstrap.servers=127.0.0.1:{port}\n")
            brokers[scenario] = {"proc": proc, "data": data_dir, "conf": conf,
                                 "bootstrap": f"127.0.0.1:{port}"}
            log(f"spool ({scenario} scenario) on 127.0.0.1:{port}")
        log(f"{len(selected)} of the suite's {len(every)} broker tests, {args.jobs} at a time, "
            f"full mode")
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rank = {n: i for i, n in enumerate(SLOW_FIRST)}
            order = sorted(groups, key=lambda g: (rank.get(g[0], len(SLOW_FIRST)), g))
            futures = [pool.submit(run_number, build, brokers[sc], n, sc, groups[(n, sc)])
                       for n, sc in order]
            for f in concurrent.futures.as_completed(futures):
                outcomes, secs = f.result()
                for name, status in outcomes:
                    results[name] = status
                    log(f"{status:8} {name} ({secs:.0f} s for its number)")
    finally:
        for b in brokers.values():
            b["proc"].terminate()
            try:
                b["proc"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                b["proc"].kill()
            shutil.rmtree(b["data"], ignore_errors=True)

    counts = {s: sum(1 for v in results.values() if v == s) for s in ("PASSED", "SKIPPED", "FAILED")}
    summary = RESULTS / "summary.tsv"
    summary.write_text("".join(f"{t}\t{results[t]}\n" for t in sorted(results)))
    log(f"{counts['PASSED']} passed, {counts['SKIPPED']} skipped, {counts['FAILED']} failed "
        f"in {time.time() - started:.0f} s; per test: {summary}")
    if not args.all and counts["FAILED"] + counts["SKIPPED"] > 0:
        bad = sorted(t for t, s in results.items() if s != "PASSED")
        log(f"not passing: {' '.join(bad)} (logs in {RESULTS})")
        sys.exit(1)


if __name__ == "__main__":
    main()
