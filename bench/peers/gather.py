"""Gather the rusher-loadgen runs of scripts/compare-peers into one peer comparison.

    gather.py held RUN_DIR           exit 0 if that broadcast run held: no failures, every copy of every
                                     message arrived, p95 of every-copy and of broadcastResult <= 500 ms
    gather.py check ARGS...          check that every server answered echo and broadcast correctly
    gather.py write ARGS... --results ROOT
                                     write ROOT/<date>-peers: summary.json (figures side by side, ratios
                                     to the first server), SETUP.md, and each run's summary and histograms

Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys

# The websocket-shootout criterion: a client count holds while p95 broadcast latency stays under this.
LIMIT_MS = 500.0

LABELS = {
    "rusher": "Rusher (mio, thread-per-core)",
    "actix": "actix-web + actix-ws (chat-server task)",
    "tokio-tungstenite": "tokio + tokio-tungstenite (broadcast channel)",
    "node-ws": "Node.js + ws",
    "python-websockets": "Python asyncio + websockets",
}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_folder(out):
    """The folder rusher-loadgen wrote under `out`, or None."""
    if not os.path.isdir(out):
        return None
    for name in sorted(os.listdir(out)):
        if os.path.isfile(os.path.join(out, name, "summary.json")):
            return os.path.join(out, name)
    return None


def hgrm_percentile(path, q):
    """The value (ms) at percentile q (0-1) of an .hgrm file, or None without one."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and re.match(r"^[0-9.]+$", parts[0]) and re.match(r"^[0-9.]+$", parts[1]):
                if float(parts[1]) >= q:
                    return float(parts[0])
    return None


def load(out):
    """(folder, summary) of one run, or (None, None) if the run left no summary."""
    folder = run_folder(out)
    if folder is None:
        return None, None
    with open(os.path.join(folder, "summary.json")) as f:
        return folder, json.load(f)


def failed_count(s):
    """Connections that failed (any reason) in a run."""
    c = s.get("counters", {})
    f = c.get("failures", [])
    if isinstance(f, dict):
        return sum(f.values())
    total = 0
    for item in f:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            total += item[1]
        elif isinstance(item, dict):
            total += item.get("count", 0)
    return total


def broadcast_figures(folder, s):
    """What a broadcast run measured, and whether it held."""
    b = s.get("broadcast") or {}
    lat = s.get("latency_us", {})
    every_p95 = hgrm_percentile(os.path.join(folder, "every-copy.hgrm"), 0.95)
    result_p95 = hgrm_percentile(os.path.join(folder, "ack.hgrm"), 0.95)
    c = s.get("counters", {})
    held = (
        failed_count(s) == 0
        and b.get("messages", 0) > 0
        and b.get("incomplete", 1) == 0
        and c.get("acked") == c.get("published")
        and every_p95 is not None
        and every_p95 <= LIMIT_MS
        and result_p95 is not None
        and result_p95 <= LIMIT_MS
    )
    return {
        "clients": s.get("connections"),
        "messages": b.get("messages", 0),
        "complete": b.get("complete", 0),
        "incomplete": b.get("incomplete", 0),
        "every_copy_ms": ms(b.get("every_copy_us")),
        "every_copy_p95_ms": every_p95,
        "result_ms": ms(lat.get("ack")),
        "result_p95_ms": result_p95,
        "copy_ms": ms(lat.get("delivery")),
        "failed": failed_count(s),
        "held": held,
    }


def ms(lat):
    """Latency percentiles in ms from the loadgen's µs percentiles."""
    if not lat or not lat.get("count"):
        return None
    out = {"count": lat["count"]}
    for k in ("p50", "p90", "p99", "max"):
        out[k] = round(lat[k] / 1000.0, 3)
    return out


def cmd_held(args):
    folder, s = load(args.run)
    if s is None:
        print("   no summary: not held")
        return 1
    f = broadcast_figures(folder, s)
    print(
        f"   every copy p95 {f['every_copy_p95_ms']} ms, broadcastResult p95 {f['result_p95_ms']} ms, "
        f"{f['incomplete']} incomplete, {f['failed']} failed: {'held' if f['held'] else 'NOT held'}"
    )
    return 0 if f["held"] else 1


def collect(args):
    """Every server's runs: {server: {label: (folder, summary)}}."""
    servers = args.servers.split()
    runs = {}
    for server in servers:
        runs[server] = {}
        base = os.path.join(args.runs, server)
        for label in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            folder, s = load(os.path.join(base, label))
            runs[server][label] = (folder, s)
    return servers, runs


def cmd_check(args):
    """Every server held its connections, answered every echo, and delivered every broadcast copy."""
    servers, runs = collect(args)
    problems = []
    for server in servers:
        for label, (folder, s) in runs[server].items():
            if s is None:
                problems.append(f"{server} {label}: no summary")
                continue
            c = s.get("counters", {})
            if failed_count(s):
                problems.append(f"{server} {label}: {failed_count(s)} connections failed: {c.get('failures')}")
            if c.get("published", 0) == 0 or c.get("acked") != c.get("published"):
                problems.append(f"{server} {label}: {c.get('acked')} answers to {c.get('published')} messages")
            if label.startswith("broadcast-"):
                want = c.get("published", 0) * s.get("connections", 0)
                if c.get("delivered") != want:
                    problems.append(f"{server} {label}: {c.get('delivered')} copies delivered, {want} expected")
                if (s.get("broadcast") or {}).get("incomplete", 1) != 0:
                    problems.append(f"{server} {label}: messages with copies missing")
            elif c.get("delivered", 0) != 0:
                problems.append(f"{server} {label}: broadcast copies in an echo run")
        labels = set(runs[server])
        if not any(l.startswith("echo-") for l in labels) or not any(l.startswith("broadcast-") for l in labels):
            problems.append(f"{server}: echo and broadcast runs expected, found {sorted(labels)}")
    for p in problems:
        print("peer check:", p, file=sys.stderr)
    if not problems:
        print(f"peer check: {', '.join(servers)} answered every echo and delivered every broadcast copy")
    return 1 if problems else 0


def figures(servers, runs):
    """The comparison's figures, each with one value per server that measured it."""
    out = []

    def add(fid, title, kind, unit, better, values):
        out.append({"id": fid, "title": title, "kind": kind, "unit": unit, "better": better, "values": values})

    hold = {srv: runs[srv].get("hold", (None, None))[1] for srv in servers}
    held = next((s.get("connections") for s in hold.values() if s), 0)
    add(
        "rss_per_connection",
        f"Server memory per held connection (RSS growth ÷ {held:,} connections)",
        "size", "bytes", "lower",
        {srv: (s or {}).get("server_rss_bytes_per_connection") for srv, s in hold.items()},
    )

    def rate(s):
        if not s or not s.get("connect_seconds") or failed_count(s):
            return None
        return round(s["counters"].get("joined", 0) / s["connect_seconds"], 1)

    add(
        "establish_rate",
        f"Connections established per second ({held:,} at 5,000/s offered: TCP + upgrade)",
        "rate", "per_s", "higher",
        {srv: rate(s) for srv, s in hold.items()},
    )
    add(
        "establish_latency",
        "Connection establish latency (TCP + upgrade), from the intended start",
        "latency", "ms", "lower",
        {srv: ms((s or {}).get("latency_us", {}).get("establish")) for srv, s in hold.items()},
    )
    echo_labels = sorted({l for srv in servers for l in runs[srv] if l.startswith("echo-")}, key=lambda l: int(l[5:]))
    for label in echo_labels:
        r = int(label[5:])
        summaries = {srv: runs[srv].get(label, (None, None))[1] for srv in servers}
        clients = next((s.get("connections") for s in summaries.values() if s), 0)
        add(
            f"echo_{r}",
            f"Echo round trip at {r:,} messages/s from {clients:,} clients",
            "latency", "ms", "lower",
            {srv: ms((s or {}).get("latency_us", {}).get("ack")) if s and not failed_count(s) else None
             for srv, s in summaries.items()},
        )
    counts = sorted({int(l[10:]) for srv in servers for l in runs[srv] if l.startswith("broadcast-")})
    # The highest count of an unbroken run of held steps from the smallest: the search stops at the
    # first miss, and the COUNTs that still run after it do not count.
    best = {srv: 0 for srv in servers}
    streak = {srv: True for srv in servers}
    details = {}
    for n in counts:
        vals = {}
        for srv in servers:
            folder, s = runs[srv].get(f"broadcast-{n}", (None, None))
            if s is None:
                continue
            f = broadcast_figures(folder, s)
            details.setdefault(srv, {})[str(n)] = f
            # A run with copies missing or failures has no completion time to compare.
            vals[srv] = f["every_copy_ms"] if f["incomplete"] == 0 and f["failed"] == 0 else None
        for srv in servers:
            f = details.get(srv, {}).get(str(n))
            if f is None:
                continue
            if f["held"] and streak[srv]:
                best[srv] = n
            else:
                streak[srv] = False
        if n in REQUIRED:
            add(
                f"broadcast_{n}",
                f"Broadcast to {n:,} clients: time until every copy of a message arrived",
                "latency", "ms", "lower", vals,
            )
    add(
        "max_clients",
        f"Most clients held with p95 broadcast latency under {LIMIT_MS:.0f} ms (steps {', '.join(f'{n:,}' for n in counts)})",
        "count", "clients", "higher",
        {srv: best[srv] for srv in servers},
    )
    return out, details


# The broadcast client counts given on the command line: each gets a chart of its own.
REQUIRED = set()


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def locked(lock, name):
    """The version of `name` in a Cargo.lock."""
    try:
        text = open(lock).read()
    except OSError:
        return "unknown"
    m = re.search(r'name = "' + re.escape(name) + r'"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "unknown"


def versions():
    peers = os.path.join(ROOT, "bench", "peers")
    node_lock = json.load(open(os.path.join(peers, "node", "package-lock.json")))
    venv_py = os.path.join(ROOT, ".venv-peers", "bin", "python")
    return {
        "rusher": f"rusher-server {locked(os.path.join(ROOT, 'Cargo.lock'), 'rusher-server')} at "
        f"{version(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])}, jemalloc",
        "actix": f"actix-web {locked(os.path.join(peers, 'actix', 'Cargo.lock'), 'actix-web')}, "
        f"actix-ws {locked(os.path.join(peers, 'actix', 'Cargo.lock'), 'actix-ws')}, "
        f"tokio {locked(os.path.join(peers, 'actix', 'Cargo.lock'), 'tokio')}, system malloc",
        "tokio-tungstenite": f"tokio-tungstenite {locked(os.path.join(peers, 'tokio-tungstenite', 'Cargo.lock'), 'tokio-tungstenite')}, "
        f"tokio {locked(os.path.join(peers, 'tokio-tungstenite', 'Cargo.lock'), 'tokio')}, system malloc",
        "node-ws": f"Node.js {version(['node', '--version'])}, ws {node_lock['packages']['node_modules/ws']['version']}",
        "python-websockets": f"{version([venv_py, '--version'])}, websockets "
        f"{version([venv_py, '-c', 'import websockets; print(websockets.__version__)'])}",
    }


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))
        mem = f"{int(mem) / 1048576:.1f} GiB"
    except (OSError, StopIteration):
        mem = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "rustc": version(["rustc", "--version"])}


def cmd_write(args):
    servers, runs = collect(args)
    REQUIRED.update(int(c) for c in args.command.split()[1:] if c.isdigit())
    figs, details = figures(servers, runs)
    vers = versions()
    date = args.started[:10]
    dest = os.path.join(args.results, f"{date}-peers")
    n = 2
    while os.path.exists(dest):
        dest = os.path.join(args.results, f"{date}-peers-{n}")
        n += 1
    os.makedirs(dest)
    for srv in servers:
        for label, (folder, _) in runs[srv].items():
            if folder is None:
                continue
            to = os.path.join(dest, srv, label)
            os.makedirs(to)
            for name in os.listdir(folder):
                if name == "summary.json" or name.endswith(".hgrm"):
                    shutil.copy(os.path.join(folder, name), to)
    where = (f"each server pinned to CPU {args.server_cpu} with taskset and given one worker thread; "
             f"the load generator pinned to CPU {args.load_cpus}, one event-loop thread per agent process")
    summary = {
        "scenario": {"kind": "peers", "baseline": servers[0], "command": f"{args.env} {args.command}".strip()},
        "connections": max((s.get("connections", 0) for r in runs.values() for _, s in r.values() if s), default=0),
        "peers": {
            "baseline": servers[0],
            "cores": where,
            "limit_ms": LIMIT_MS,
            "servers": [{"id": s, "label": LABELS.get(s, s), "version": vers.get(s, "unknown")} for s in servers],
            "figures": figs,
            "broadcast": details,
        },
    }
    with open(os.path.join(dest, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    m = machine()
    lines = [
        f"# Peer comparison {args.started}",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{args.env} {args.command}` |",
        f"| machine | {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']} |",
        f"| load average (1/5/15 min) | {args.load[0]} before, {args.load[1]} after: shared with other builds |",
        f"| cores | {where} |",
        f"| rustc | {m['rustc']} |",
        f"| open files | {version(['sh', '-c', 'ulimit -Hn'])} per process (hard limit) |",
        "",
        "| server | label | versions |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {LABELS.get(s, s)} | {vers.get(s, 'unknown')} |" for s in servers]
    lines += [
        "",
        "Every run is `rusher-loadgen shootout` against a fresh server process on its own loopback port",
        "(`hold`: connections opened at 5,000/s, held 3 s, server RSS sampled; `echo-R`: R echo messages/s in",
        "all; `broadcast-N`: connection 0 of N broadcasts, every copy timed). Each run's summary.json and",
        "histograms are in `<server>/<run>/`. Ratios in summary.json's figures are to the first server.",
        "",
    ]
    with open(os.path.join(dest, "SETUP.md"), "w") as f:
        f.write("\n".join(lines))
    print_table(servers, figs)
    print(f"wrote {dest}")
    return 0


def print_table(servers, figs):
    base = servers[0]
    for f in figs:
        print(f["title"])
        for srv in servers:
            v = f["values"].get(srv)
            b = f["values"].get(base)
            val = v["p99"] if isinstance(v, dict) else v
            bv = b["p99"] if isinstance(b, dict) else b
            shown = "—" if val is None else (f"p99 {val:,.2f} ms" if isinstance(v, dict) else f"{val:,.1f} {f['unit']}")
            ratio = f" ×{val / bv:.2f} of {base}" if val is not None and bv else ""
            print(f"  {srv:20} {shown}{ratio}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("held")
    h.add_argument("run")
    for name in ("check", "write"):
        a = sub.add_parser(name)
        a.add_argument("--runs", required=True)
        a.add_argument("--servers", required=True)
        a.add_argument("--started", required=True)
        a.add_argument("--load", action="append", default=[])
        a.add_argument("--server-cpu", default="?")
        a.add_argument("--load-cpus", default="?")
        a.add_argument("--command", default="scripts/compare-peers")
        a.add_argument("--env", default="")
        a.add_argument("--results", default="results")
    args = p.parse_args()
    return {"held": cmd_held, "check": cmd_check, "write": cmd_write}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
