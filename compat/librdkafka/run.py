#!/usr/bin/env python3
"""Runs librdkafka's own integration test suite against a fresh Spool broker.

librdkafka's source, tests/ included, ships in the rdkafka-sys crate that cargo already
downloads for the rdkafka dev-dependency. This runner finds it with `cargo metadata`, builds
librdkafka and its tests/test-runner in a copy under target/compat/, starts `spool serve` on free
ports with an empty data directory, points the suite at it with a test.conf, and runs broker tests
in full mode (never -Q, which skips most subtests). The suite selects tests by number, so each
process runs every test of one number (0045 has five), one after another (-p1); each test's
outcome is read from the runner's output.

    compat/librdkafka/run.py                  # the allow-list; exits 1 if any allowed test fails
    compat/librdkafka/run.py --all            # every broker test; writes a summary, never fails
    compat/librdkafka/run.py 0001 0042        # just these (by number or name)

Options: -j N runs N tests at once against the one broker; --spool PATH uses that binary
instead of building target/debug/spool. Logs: target/compat/results/<number>.log (and the
broker's in broker.log).
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
WORK = ROOT / "target" / "compat"
RESULTS = WORK / "results"
# The broker version the suite is told: Spool serves Kafka 4's API versions (no pre-v2 message
# formats), so tests gated on 4.0 behaviour take the 4.0 path.
BROKER_VERSION = "4.0.0.0"
# Longest a single test may run before it counts as failed (hung).
TEST_TIMEOUT_S = 900


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
    """The suite's tests that need a broker: every entry of test.c's table not flagged local."""
    text = (build / "tests" / "test.c").read_text()
    table = text[text.index("struct test tests[] = {"):]
    tests = []
    for name, flags in re.findall(r"_TEST\(\s*(\d{4}\w*)\s*,\s*([^,)]*)", table):
        if "TEST_F_LOCAL" not in flags:
            tests.append(name)
    return tests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(spool, data_dir):
    port = free_port()
    log_file = open(RESULTS / "broker.log", "w")
    proc = subprocess.Popen(
        [
            str(spool), "serve",
            "--data-dir", str(data_dir),
            "--kafka-addr", f"127.0.0.1:{port}",
            # The suite's default scenario: auto-created topics with 4 partitions.
            "--num-partitions", "4",
            "--auto-create-topics", "true",
            "--group-initial-rebalance-delay-ms", "0",
        ],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"spool exited with {proc.returncode}; see {RESULTS / 'broker.log'}")
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


def run_number(build, conf, number, names):
    """Runs every test of one number in one process; (name, outcome) for those in `names`."""
    start = time.time()
    env = dict(
        os.environ,
        TESTS=number,
        RDKAFKA_TEST_CONF=str(conf),
        TEST_KAFKA_VERSION=BROKER_VERSION,
        # The runner links the freshly built shared libraries.
        LD_LIBRARY_PATH=f"{build / 'src'}:{build / 'src-cpp'}",
    )
    try:
        p = subprocess.run(
            ["./test-runner", "-p1", "-E", "-L", "-V", BROKER_VERSION, number],
            cwd=build / "tests", env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT_S,
        )
        output = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += f"\n(runner: timed out after {TEST_TIMEOUT_S} s)\n"
    output = ANSI.sub("", output)
    (RESULTS / f"{number}.log").write_text(output)
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
        selected = every
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
        spool = ROOT / "target" / "debug" / "spool"

    data_dir = Path(tempfile.mkdtemp(prefix="spool-compat-"))
    broker, port = start_broker(spool, data_dir)
    conf = WORK / "test.conf"
    conf.write_text(f"bootstrap.servers=127.0.0.1:{port}\n")
    log(f"spool on 127.0.0.1:{port}; {len(selected)} of the suite's {len(every)} broker tests, "
        f"{args.jobs} at a time, full mode")
    results = {}
    started = time.time()
    try:
        by_number = {}
        for t in selected:
            by_number.setdefault(t[:4], []).append(t)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_number, build, conf, n, ts) for n, ts in by_number.items()]
            for f in concurrent.futures.as_completed(futures):
                outcomes, secs = f.result()
                for name, status in outcomes:
                    results[name] = status
                    log(f"{status:8} {name} ({secs:.0f} s for its number)")
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

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
