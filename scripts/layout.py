#!/usr/bin/env python3
"""Regenerates layout/hot-functions.txt.gz: which functions each km role runs.

`make layout` builds km with `-C instrument-coverage` and runs this script:

  scripts/layout.py run KM DIR    runs `km local` (the instrumented KM) through
                                  a user's session (pods, a Deployment and a
                                  Service, logs, a pod that fits nowhere,
                                  deletions, Ctrl-C); every km process writes
                                  its counters to DIR, and DIR/roles says
                                  which process ran which role.
  scripts/layout.py write KM DIR OUT
                                  reads the counters and writes OUT: every
                                  function that ran, with what it calls that
                                  has no counters (KM's disassembly) and the
                                  standard library's own code, grouped by the
                                  set of roles that ran it.

scripts/km-link reads that list when it links an optimised km (why: see
there). The counters are LLVM raw profiles (format version 10, rustc 1.95's
LLVM); a function ran when any of its counters is non-zero. Functions are
named by their demangled path without crate hashes, so the list holds across
profiles and dependency updates; what it no longer names is simply not
ordered.
"""

import collections
import glob
import gzip
import hashlib
import os
import shutil
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

RAW_MAGIC = 0xFF6C70726F667281
RAW_VERSION = 10
HEADER = 16 * 8
DATA_RECORD = 64  # NameRef, FuncHash, CounterPtr, BitmapPtr, FunctionPointer, Values, NumCounters, NumValueSites[3], NumBitmapBytes
ROLES = ["executor-supervisor", "executor-worker", "scheduler", "local"]
IMAGE = "km-test/busybox:1"


def uleb128(buf, i):
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def ran(path):
    """The PGO names of the functions a raw profile saw run, and of all it counts."""
    raw = open(path, "rb").read()
    h = struct.unpack_from("<16Q", raw, 0)
    if h[0] != RAW_MAGIC or h[1] != RAW_VERSION:
        raise SystemExit(f"{path}: not an LLVM raw profile of version {RAW_VERSION}")
    ids, ndata, pad_before, ncounters, pad_after, nbitmap, pad_bitmap, nnames, counters_delta = h[2:11]
    data = HEADER + ids
    counters = data + ndata * DATA_RECORD + pad_before
    names_at = counters + ncounters * 8 + pad_after + nbitmap + pad_bitmap
    names = {}
    blob, i = raw[names_at : names_at + nnames], 0
    while i < len(blob) and blob[i:].strip(b"\0"):
        plain, i = uleb128(blob, i)
        packed, i = uleb128(blob, i)
        chunk = zlib.decompress(blob[i : i + packed]) if packed else blob[i : i + plain]
        i += packed or plain
        for name in chunk.split(b"\x01"):
            names[struct.unpack("<Q", hashlib.md5(name).digest()[:8])[0]] = name.decode()
    delta = counters_delta - (1 << 64) if counters_delta >= 1 << 63 else counters_delta
    seen, counted = set(), set()
    for k in range(ndata):
        at = data + k * DATA_RECORD
        name_ref, _, counter_ptr = struct.unpack_from("<QQq", raw, at)
        (n,) = struct.unpack_from("<I", raw, at + 48)
        start = counters + counter_ptr - delta
        counted.add(names.get(name_ref) or "")
        if any(struct.unpack_from(f"<{n}Q", raw, start)):
            seen.add(names.get(name_ref) or "")
        delta -= DATA_RECORD
    seen.discard("")
    return seen, counted


def calls(km):
    """Direct calls and tail calls between the functions of KM, from its disassembly."""
    dis = subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", km], stdout=subprocess.PIPE, text=True)
    edges = collections.defaultdict(set)
    here = None
    for line in dis.stdout:
        if line.endswith(">:\n"):
            here = line[line.index("<") + 1 : -3]
        elif here and ("call" in line or "jmp" in line):
            m = re.search(r"\s(?:call|jmp)\s+[0-9a-f]+ <([^>+]+)>$", line)
            if m and m.group(1) != here:
                edges[here].add(m.group(1))
    dis.wait()
    return edges


def with_uncounted_callees(names, counted, edges, depth=64):
    """NAMES and what they call that has no counters (std's precompiled code, drop glue,
    shims), followed through such functions DEPTH calls deep: a profile cannot tell
    whether those ran, and they sit beside the code that calls them."""
    out, frontier = set(names), set(names)
    for _ in range(depth):
        frontier = {t for f in frontier for t in edges.get(f, ()) if t not in counted and t not in out}
        out |= frontier
    return out


def keys(mangled):
    """Demangled names without crate hashes, as scripts/km-link computes them."""
    plain = [m.split(";")[-1] for m in mangled]
    out = subprocess.run(["c++filt"], input="\n".join(plain), capture_output=True, text=True, check=True).stdout
    return [re.sub(r"\[[0-9a-f]*\]", "", line) for line in out.splitlines()]


def role_of(args):
    if " executor" in args:
        return "executor-worker" if "--worker" in args else "executor-supervisor"
    if " scheduler" in args:
        return "scheduler"
    if " local" in args:
        return "local"
    return None


def kubectl(env, *args, check=True, timeout=240):
    print("+ kubectl", " ".join(args), flush=True)
    return subprocess.run(["kubectl", *args], env=env, check=check, timeout=timeout, capture_output=True, text=True)


def pod(name, extra=""):
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: layout}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: ["sleep", "3600"]
{extra}---
"""


SESSION_EXTRA = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        command: ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
        livenessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 2}}
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: conf}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: OnFailure
  volumes:
  - name: conf
    configMap: {{name: conf}}
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "cat /conf/greeting; i=0; while true; do echo line $i; i=$((i+1)); sleep 1; done"]
    volumeMounts: [{{name: conf, mountPath: /conf}}, {{name: scratch, mountPath: /scratch}}]
    resources: {{requests: {{cpu: 100m, memory: 32Mi}}, limits: {{cpu: 200m, memory: 64Mi}}}}
    ports: [{{containerPort: 9000, hostPort: 31500}}]
---
"""


def run(km, out):
    os.makedirs(out, exist_ok=True)
    data = tempfile.mkdtemp(prefix="km-layout-")
    env = dict(os.environ, LLVM_PROFILE_FILE=os.path.join(out, "km-%p.profraw"))
    kenv = dict(os.environ, KUBECONFIG=os.path.join(data, "kubeconfig"))
    log = open(os.path.join(out, "km-local.log"), "w+")
    local = subprocess.Popen(
        [km, "local", "--data-dir", data, "--agent-resources", "cpus:32;mem:16384"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    roles = {}

    def note_roles():
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        for line in ps.splitlines():
            pid, _, args = line.strip().partition(" ")
            if "km" in args.split(" ")[0] and role_of(args):
                roles[int(pid)] = role_of(args)

    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("km local is ready") for line in open(log.name)):
            if local.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"km local did not become ready; see {log.name}")
            time.sleep(0.2)
        kubectl(kenv, "get", "nodes")
        manifest = "".join(pod(f"p{i}") for i in range(40)) + SESSION_EXTRA
        manifest += pod("huge", "    resources: {requests: {cpu: '1000'}}\n").replace("app: layout", "app: nowhere")
        subprocess.run(["kubectl", "apply", "-f", "-"], input=manifest, env=kenv, check=True, text=True)
        time.sleep(2)
        note_roles()
        kubectl(kenv, "wait", "--for=condition=Ready", "pod", "-l", "app in (layout,web)", "--timeout=240s")
        kubectl(kenv, "wait", "--for=condition=Ready", "pod/talker", "--timeout=120s")
        note_roles()
        for args in (
            ["get", "pods", "-o", "wide"],
            ["describe", "pod", "huge"],
            ["get", "events"],
            ["logs", "talker"],
            ["logs", "talker", "--tail=2", "--timestamps"],
            ["get", "endpoints", "web", "-o", "yaml"],
            ["get", "nodes", "-o", "yaml"],
            ["scale", "deployment", "web", "--replicas=5"],
            ["label", "pod", "p1", "extra=yes"],
            ["annotate", "pod", "p2", "note=yes"],
        ):
            kubectl(kenv, *args)
        follow = subprocess.Popen(["kubectl", "logs", "-f", "talker"], env=kenv, stdout=subprocess.DEVNULL)
        time.sleep(3)
        follow.terminate()
        kubectl(kenv, "wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=120s")
        kubectl(kenv, "delete", "pod", *[f"p{i}" for i in range(20)], "--wait=true")
        kubectl(kenv, "delete", "deployment", "web", "--wait=true")
        note_roles()
    finally:
        local.send_signal(signal.SIGINT)
        local.wait(timeout=120)
        with open(os.path.join(out, "roles"), "w") as f:
            for pid, role in sorted(roles.items()):
                f.write(f"{pid} {role}\n")
    # Executors run with the agent's environment only: they write their
    # counters into their sandboxes (the runtime's default file name).
    for path in glob.glob(os.path.join(data, "**", "*.profraw"), recursive=True):
        os.replace(path, os.path.join(out, os.path.basename(path)))
    shutil.rmtree(data, ignore_errors=True)
    print(f"counters of {len(glob.glob(os.path.join(out, '*.profraw')))} processes in {out}")


STD_CRATES = {"core", "alloc", "std", "__rustc", "std_detect", "hashbrown", "memchr", "gimli", "addr2line",
              "object", "miniz_oxide", "rustc_demangle", "panic_unwind", "unwind"}


def std_only(km, counted):
    """KM's functions without counters that belong to the standard library alone (their
    paths and generic arguments name no other crate): allocation, formatting, strings,
    panics. Every role runs some of them, often through a vtable, which the call graph
    cannot follow."""
    nm = subprocess.run(["nm", "--defined-only", km], capture_output=True, text=True, check=True).stdout
    names = [f[2] for f in (line.split() for line in nm.splitlines()) if len(f) == 3 and f[1] in "tTwW"]
    names = [n for n in names if n not in counted]
    out = set()
    for name, key in zip(names, keys(names)):
        roots = set(re.findall(r"(?:^|[<&(, \[*])(?:dyn |mut |const )?([A-Za-z_][A-Za-z0-9_]*)::", key))
        if roots and roots <= STD_CRATES:
            out.add(name)
    return out


def write(km, out_dir, target):
    roles = {}
    for line in open(os.path.join(out_dir, "roles")):
        pid, role = line.split()
        roles[int(pid)] = role
    by_role = collections.defaultdict(set)
    counted = set()
    for path in glob.glob(os.path.join(out_dir, "*.profraw")):
        m = re.search(r"(\d+)\D*\.profraw$", os.path.basename(path))
        role = roles.get(int(m.group(1))) if m else None
        if role is None:
            print(f"{path}: no role recorded for its process; skipped", file=sys.stderr)
            continue
        seen, all_counted = ran(path)
        by_role[role] |= seen
        counted |= all_counted
    edges = calls(km)
    std = std_only(km, counted)
    for role in by_role:
        by_role[role] = with_uncounted_callees(by_role[role], counted, edges) | std
    names = sorted(set().union(*by_role.values()))
    key_of = dict(zip(names, keys(names)))
    mask = collections.Counter()
    for bit, role in enumerate(ROLES):
        for name in by_role.get(role, ()):
            mask[key_of[name]] |= 1 << bit
    # Shared code first, then code of fewer roles; each set of roles is one
    # contiguous run, sorted by name so that a module's functions sit together.
    order = sorted(mask, key=lambda k: (-bin(mask[k]).count("1"), mask[k], k))
    with gzip.open(target, "wt", compresslevel=9) as f:
        f.write("# Functions km's roles ran in a profiled session (scripts/layout.py, `make layout`).\n")
        f.write("# scripts/km-link places them first in an optimised km, in this order.\n")
        for role in ROLES:
            f.write(f"# {role}: {sum(1 for k in mask if mask[k] & (1 << ROLES.index(role)))} functions\n")
        for k in order:
            f.write(k + "\n")
    print(f"{len(order)} functions written to {target}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
