"""A minimal Mesos v1 HTTP executor for km dev-agent's tests (stdlib only).

It subscribes with JSON, answers LAUNCH with TASK_RUNNING and KILL with
TASK_KILLED, exits on SHUTDOWN, keeps unacknowledged tasks and updates, and
when MESOS_CHECKPOINT=1 reconnects after the agent goes away, as a
checkpointing executor must. Every event type it receives is appended to
events.log in its sandbox so tests can see what happened.
"""

import base64
import http.client
import json
import os
import sys
import time
import uuid

HOST, PORT = os.environ["MESOS_AGENT_ENDPOINT"].rsplit(":", 1)
FRAMEWORK = {"value": os.environ["MESOS_FRAMEWORK_ID"]}
EXECUTOR = {"value": os.environ["MESOS_EXECUTOR_ID"]}
CHECKPOINT = os.environ.get("MESOS_CHECKPOINT") == "1"

RECOVERY_TIMEOUT = 30
last_event = time.time()
unacked_updates = {}
unacked_tasks = {}
running = set()


def log(line):
    with open("events.log", "a") as f:
        f.write(line + "\n")


def post(call):
    call.update({"executor_id": EXECUTOR, "framework_id": FRAMEWORK})
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=10)
    conn.request("POST", "/api/v1/executor", json.dumps(call), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def update(task_id, state):
    u = base64.b64encode(uuid.uuid4().bytes).decode()
    status = {"task_id": task_id, "state": state, "source": "SOURCE_EXECUTOR", "uuid": u}
    unacked_updates[u] = {"status": status}
    try:
        post({"type": "UPDATE", "update": {"status": status}})
    except OSError:
        pass  # resent with the next SUBSCRIBE


def events():
    conn = http.client.HTTPConnection(HOST, int(PORT))
    body = {
        "executor_id": EXECUTOR,
        "framework_id": FRAMEWORK,
        "type": "SUBSCRIBE",
        "subscribe": {
            "unacknowledged_tasks": list(unacked_tasks.values()),
            "unacknowledged_updates": list(unacked_updates.values()),
        },
    }
    conn.request(
        "POST",
        "/api/v1/executor",
        json.dumps(body),
        {"Content-Type": "application/json", "Accept": "application/json"},
    )
    resp = conn.getresponse()
    if resp.status != 200:
        raise OSError("SUBSCRIBE answered %d: %s" % (resp.status, resp.read()))
    while True:
        header = b""
        while not header.endswith(b"\n"):
            c = resp.read(1)
            if not c:
                return
            header += c
        yield json.loads(resp.read(int(header)))


def serve():
    global last_event
    for ev in events():
        last_event = time.time()
        kind = ev["type"]
        log(kind)
        if kind == "LAUNCH":
            task = ev["launch"]["task"]
            unacked_tasks[task["task_id"]["value"]] = task
            running.add(task["task_id"]["value"])
            update(task["task_id"], "TASK_RUNNING")
        elif kind == "KILL":
            tid = ev["kill"]["task_id"]
            running.discard(tid["value"])
            update(tid, "TASK_KILLED")
        elif kind == "ACKNOWLEDGED":
            unacked_updates.pop(ev["acknowledged"]["uuid"], None)
            unacked_tasks.pop(ev["acknowledged"]["task_id"]["value"], None)
        elif kind == "SHUTDOWN":
            for tid in list(running):
                update({"value": tid}, "TASK_KILLED")
            sys.exit(0)


def main():
    while time.time() - last_event < RECOVERY_TIMEOUT:
        try:
            serve()
        except OSError as e:
            log("ERROR " + str(e))
        if not CHECKPOINT:
            return
        log("DISCONNECTED")
        time.sleep(0.3)


main()
