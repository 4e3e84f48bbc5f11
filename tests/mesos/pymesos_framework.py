"""A pymesos framework for km's tests: launches one command task on the first
offer and reports the task states it sees. Exits 0 when it has seen every
state in --expect, in order; 1 on timeout or an unexpected terminal state.
"""
import argparse
import json
import sys
import threading
import time

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler

TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"}


class OneTask(Scheduler):
    def __init__(self, command, expect):
        self.command = command
        self.expect = expect
        self.launched = False
        self.seen = []
        self.done = threading.Event()
        self.ok = False

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if self.launched:
                driver.declineOffer(offer.id)
                continue
            task = Dict()
            task.task_id.value = "pymesos-task-1"
            task.agent_id.value = offer.agent_id.value
            task.name = "pymesos test task"
            task.command.value = self.command
            task.resources = [
                dict(name="cpus", type="SCALAR", scalar={"value": 0.1}),
                dict(name="mem", type="SCALAR", scalar={"value": 32}),
            ]
            driver.launchTasks(offer.id, [task])
            self.launched = True

    def statusUpdate(self, driver, update):
        self.seen.append(update.state)
        print(json.dumps({"state": update.state, "message": update.get("message", "")}), flush=True)
        want = [s for s in self.expect]
        it = iter(self.seen)
        if all(any(s == w for s in it) for w in want):
            self.ok = True
            self.done.set()
        elif update.state in TERMINAL:
            self.done.set()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--command", default="echo hello")
    p.add_argument("--expect", default="TASK_RUNNING,TASK_FINISHED")
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    framework = Dict()
    framework.user = "root"
    framework.name = "pymesos-km-test"
    framework.hostname = "localhost"
    sched = OneTask(a.command, a.expect.split(","))
    driver = MesosSchedulerDriver(sched, framework, a.master, use_addict=True)
    driver.start()
    sched.done.wait(a.timeout)
    driver.stop()
    print(json.dumps({"seen": sched.seen, "ok": sched.ok}), flush=True)
    sys.exit(0 if sched.ok else 1)


if __name__ == "__main__":
    main()
