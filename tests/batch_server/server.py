"""A local stand-in for the Azure Batch service (there is no emulator).

It speaks the subset of the Batch REST API (2025-06-01) that ``xt_magic.core.compute.batch`` uses:
pools (create/get/list/delete/resize), nodes (list), jobs (create/get/list/terminate/delete), tasks
(create, addtaskcollection, list/get, terminate, files), with SharedKey request signing checked the
way the service checks it (a wrong key gets the service's 403 ``AuthenticationFailed``).

Tasks really run: each node is a directory, each task a local process started WITHOUT a shell (like
Batch on Linux), in its own working directory, after its resource files were downloaded from their
SAS URLs; environment settings and the ``AZ_BATCH_*`` variables are set; on completion OutputFiles
are uploaded to their SAS destinations. Multi-instance tasks run their coordination command on every
node, then the application command on the primary. A job preparation task runs once per node
per job.

Faults (``server.faults``): ``throttle`` (n requests answered 429 + Retry-After), ``resize_error``
(a code: new pools get no nodes and that resize error), ``fail_tasks`` (set of task ids that exit 1
at once), ``preempt`` (set of task ids whose low-priority node is preempted while they run).
Everything received is kept in ``server.received`` for canary scans.
"""
from __future__ import annotations

import base64
import email.utils
import glob
import hashlib
import hmac
import json
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIGNED_HEADERS = ["content-encoding", "content-language", "content-length", "content-md5",
                  "content-type", "date", "if-modified-since", "if-match", "if-none-match",
                  "if-unmodified-since", "range"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, values: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.values = status, code, message, values or {}


class Node:
    def __init__(self, pool: "Pool", index: int, dedicated: bool):
        self.pool, self.dedicated = pool, dedicated
        self.id = f"tvmps_{pool.id}_{index}"
        self.ip = f"10.0.0.{index + 4}"
        self.state = "idle"
        self.root = os.path.join(pool.server.root, "nodes", self.id)
        self.running: dict[str, subprocess.Popen] = {}   # task key -> process
        self.prepared_jobs: set[str] = set()
        self.prep_lock = threading.Lock()   # the job preparation task runs once per node
        self.preempted_until = 0.0
        for sub in ("shared", "startup", "workitems"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    def free_slots(self) -> int:
        if self.state in ("preempted", "starting", "unusable") or \
                time.time() < self.preempted_until:
            return 0
        return self.pool.slots - len(self.running)

    def to_json(self) -> dict:
        return {"id": self.id, "url": f"/pools/{self.pool.id}/nodes/{self.id}", "state": self.state,
                "schedulingState": "enabled", "stateTransitionTime": _now(), "ipAddress": self.ip,
                "isDedicated": self.dedicated, "vmSize": self.pool.spec.get("vmSize"),
                "runningTasksCount": len(self.running), "runningTaskSlotsCount": len(self.running),
                "totalTasksRun": 0}


class Pool:
    def __init__(self, server: "BatchServer", spec: dict):
        self.server, self.spec, self.id = server, spec, spec["id"]
        self.slots = int(spec.get("taskSlotsPerNode") or 1)
        self.state, self.allocation_state = "active", "resizing"
        self.created = time.time()
        self.resize_errors: list[dict] = []
        self.nodes: list[Node] = []
        self.target = (int(spec.get("targetDedicatedNodes") or 0),
                       int(spec.get("targetLowPriorityNodes") or 0))

    def allocate(self) -> None:
        """Called by the scheduler once the pool's (short) allocation delay passed."""
        code = self.server.faults.get("resize_error")
        if code:
            self.resize_errors = [{"code": code, "message": f"The specified account has reached "
                                   f"its core quota ({code})", "values": []}]
        else:
            dedicated, low = self.target
            while len(self.nodes) < dedicated + low:
                i = len(self.nodes)
                self.nodes.append(Node(self, i, dedicated=i < dedicated))
        self.allocation_state = "steady"

    def to_json(self) -> dict:
        out = dict(self.spec)
        dedicated = sum(1 for n in self.nodes if n.dedicated)
        out.update({"url": f"/pools/{self.id}", "state": self.state,
                    "allocationState": self.allocation_state, "creationTime": _now(),
                    "currentDedicatedNodes": dedicated,
                    "currentLowPriorityNodes": len(self.nodes) - dedicated,
                    "targetDedicatedNodes": self.target[0],
                    "targetLowPriorityNodes": self.target[1]})
        if self.resize_errors:
            out["resizeErrors"] = self.resize_errors
        return out


class Task:
    def __init__(self, job: "Job", spec: dict):
        self.job, self.spec, self.id = job, spec, spec["id"]
        self.state = "active"
        self.exec: dict = {"retryCount": 0, "requeueCount": 0}
        self.node_info: dict | None = None
        self.nodes: list[Node] = []
        self.dirs: dict[str, str] = {}   # node id -> task dir
        self.killed = False

    @property
    def instances(self) -> int:
        return int((self.spec.get("multiInstanceSettings") or {}).get("numberOfInstances") or 1)

    def to_json(self) -> dict:
        out = dict(self.spec)
        out.update({"url": f"/jobs/{self.job.id}/tasks/{self.id}", "state": self.state,
                    "stateTransitionTime": _now(), "creationTime": _now(),
                    "executionInfo": dict(self.exec)})
        if self.node_info:
            out["nodeInfo"] = self.node_info
        return out


class Job:
    def __init__(self, server: "BatchServer", spec: dict):
        self.server, self.spec, self.id = server, spec, spec["id"]
        spec.setdefault("onAllTasksComplete", "noaction")  # the service's default
        self.state = "active"
        self.created = self.changed = _now()
        self.tasks: dict[str, Task] = {}
        self.auto_pool: str | None = None   # id of the pool made from autoPoolSpecification

    @property
    def pool_id(self) -> str:
        return self.auto_pool or (self.spec.get("poolInfo") or {}).get("poolId", "")

    def to_json(self) -> dict:
        out = dict(self.spec)
        info = {"startTime": self.created, "poolId": self.pool_id}
        if self.state == "completed":
            info["endTime"] = self.changed
        out.update({"url": f"/jobs/{self.id}", "state": self.state, "creationTime": self.created,
                    "stateTransitionTime": self.changed, "executionInfo": info})
        return out


class BatchServer:
    """Start with ``start()``; ``url``, ``account`` and ``key`` are what a BatchClient needs."""

    def __init__(self, root: str, account: str = "xtbatch", key: str | None = None,
                 allocation_delay: float = 0.2):
        self.root, self.account = root, account
        self.key = key or base64.b64encode(os.urandom(32)).decode()
        self.allocation_delay = allocation_delay
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.faults: dict = {"throttle": 0, "resize_error": None, "fail_tasks": set(),
                             "preempt": set()}
        self.received: list[dict] = []          # every request: method, path, headers, body
        self.task_envs: list[dict] = []         # environment of every process started
        self.upload_errors: list[str] = []
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "BatchServer":
        server = self

        class Handler(_Handler):
            batch = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._schedule_loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
        with self.lock:
            for pool in self.pools.values():
                for node in pool.nodes:
                    for proc in node.running.values():
                        _kill(proc)

    # -- auth ------------------------------------------------------------------------------------
    def check_signature(self, method: str, raw_path: str, headers) -> bool:
        """Recompute the SharedKey signature exactly as the service does."""
        auth = headers.get("Authorization", "")
        if not auth.startswith(f"SharedKey {self.account}:"):
            return False
        lower = {k.lower(): v for k, v in headers.items() if v}
        if method not in ("GET", "HEAD"):
            lower.setdefault("content-length", "0")
        text = method + "\n" + "\n".join(lower.get(h, "") for h in SIGNED_HEADERS) + "\n"
        for name in sorted(k for k in lower if "ocp-" in k):
            text += f"{name}:{lower[name]}\n"
        url = urllib.parse.urlparse(raw_path)
        text += f"/{self.account}{url.path}"
        query = urllib.parse.parse_qs(url.query)
        for name in sorted(query):
            if query[name][0]:
                text += f"\n{name}:{query[name][0]}"
        digest = hmac.new(base64.b64decode(self.key), text.encode(), hashlib.sha256).digest()
        return hmac.compare_digest(auth.split(":", 1)[1], base64.b64encode(digest).decode())

    # -- REST operations -------------------------------------------------------------------------
    def handle(self, method: str, parts: list[str], query: dict, body) -> tuple[int, object]:
        with self.lock:
            return self._route(method, parts, query, body)

    def _route(self, method, parts, query, body):
        if parts == ["pools"]:
            if method == "POST":
                return self._create_pool(body)
            return 200, {"value": [p.to_json() for p in self.pools.values()]}
        if parts and parts[0] == "pools":
            pool = self.pools.get(parts[1])
            if pool is None:
                raise ServiceError(404, "PoolNotFound", "The specified pool does not exist.")
            if len(parts) == 2 and method == "GET":
                return 200, pool.to_json()
            if len(parts) == 2 and method == "DELETE":
                for node in pool.nodes:
                    for proc in node.running.values():
                        _kill(proc)
                del self.pools[pool.id]
                return 202, None
            if parts[2:] == ["nodes"]:
                return 200, {"value": [n.to_json() for n in pool.nodes]}
            if parts[2:] == ["resize"]:
                pool.target = (int(body.get("targetDedicatedNodes") or 0),
                               int(body.get("targetLowPriorityNodes") or 0))
                pool.allocation_state, pool.created = "resizing", time.time()
                return 202, None
        if parts == ["jobs"]:
            if method == "POST":
                if body["id"] in self.jobs:
                    raise ServiceError(409, "JobExists", "The specified job already exists.")
                info = body.get("poolInfo") or {}
                auto = info.get("autoPoolSpecification")
                if auto:   # (the service validates the pool spec later; here at once)
                    spec = dict(auto["pool"], id=f"{auto.get('autoPoolIdPrefix', 'auto')}_"
                                f"{os.urandom(6).hex()}")
                    self._create_pool(spec)
                elif info.get("poolId") not in self.pools:
                    raise ServiceError(409, "PoolNotFound", "The specified pool does not exist.")
                job = self.jobs[body["id"]] = Job(self, body)
                job.auto_pool = auto and spec["id"]
                return 201, None
            return 200, {"value": [j.to_json() for j in self.jobs.values()]}
        if parts and parts[0] == "jobs":
            job = self.jobs.get(parts[1])
            if job is None:
                raise ServiceError(404, "JobNotFound", "The specified job does not exist.")
            rest = parts[2:]
            if not rest and method == "GET":
                return 200, job.to_json()
            if not rest and method == "PATCH":
                job.spec.update(body)
                return 200, None
            if not rest and method == "DELETE":
                self._terminate_job(job)
                del self.jobs[job.id]
                return 202, None
            if rest == ["terminate"]:
                self._terminate_job(job)
                return 202, None
            if rest == ["addtaskcollection"]:
                if len(body.get("value", [])) > 100:
                    raise ServiceError(400, "TooManyTasks", "at most 100 tasks per collection")
                return 200, {"value": [self._add_task(job, t) for t in body["value"]]}
            if rest == ["tasks"] and method == "POST":
                result = self._add_task(job, body)
                if result["status"] != "success":
                    raise ServiceError(409, result["error"]["code"], "task exists")
                return 201, None
            if rest == ["tasks"]:
                rows = [t.to_json() for t in job.tasks.values()]
                select = (query.get("$select") or [""])[0]
                if select:  # OData $select, as the real service: only the named properties
                    keep = set(select.split(","))
                    rows = [{k: v for k, v in row.items() if k in keep} for row in rows]
                return 200, {"value": rows}
            task = job.tasks.get(rest[1]) if len(rest) >= 2 else None
            if task is None:
                raise ServiceError(404, "TaskNotFound", "The specified task does not exist.")
            if len(rest) == 2:
                return 200, task.to_json()
            if rest[2:] == ["terminate"]:
                self._finish(task, exit_code=None, failure=None, terminated=True)
                return 204, None
            if rest[2] == "files":
                return self._task_files(task, rest[3:])
        raise ServiceError(400, "InvalidUri", f"unsupported request {method} /{'/'.join(parts)}")

    def _create_pool(self, body):
        if body["id"] in self.pools:
            raise ServiceError(409, "PoolExists", "The specified pool already exists.")
        vm = body.get("vmSize", "")
        if not vm.lower().startswith("standard_"):
            raise ServiceError(400, "InvalidPropertyValue", "The value provided for one of the "
                               "properties in the request body is invalid.",
                               {"PropertyName": "vmSize", "PropertyValue": vm})
        vmc = body.get("virtualMachineConfiguration") or {}
        if not str(vmc.get("nodeAgentSKUId", "")).startswith("batch.node."):
            raise ServiceError(400, "InvalidPropertyValue", "The value provided for one of the "
                               "properties in the request body is invalid.",
                               {"PropertyName": "nodeAgentSKUId",
                                "PropertyValue": vmc.get("nodeAgentSKUId")})
        self.pools[body["id"]] = Pool(self, body)
        return 201, None

    def _add_task(self, job, spec):
        if spec["id"] in job.tasks:
            return {"status": "clienterror", "taskId": spec["id"],
                    "error": {"code": "TaskExists", "message": {"value": "task exists"}}}
        job.tasks[spec["id"]] = Task(job, spec)
        return {"status": "success", "taskId": spec["id"], "eTag": "0x1",
                "lastModified": _now(), "location": f"/jobs/{job.id}/tasks/{spec['id']}"}

    def _task_files(self, task, rest):
        task_dir = task.dirs.get(task.nodes[0].id) if task.nodes else None
        if not task_dir:
            raise ServiceError(404, "NodeFileNotFound", "no files yet")
        if not rest:
            files = []
            for dirpath, _dirs, names in os.walk(task_dir):
                for name in names:
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, task_dir)
                    files.append({"name": rel, "isDirectory": False, "url": rel,
                                  "properties": {"contentLength": os.path.getsize(full),
                                                 "lastModified": _now()}})
            return 200, {"value": files}
        path = os.path.normpath(os.path.join(task_dir, *rest))
        if not path.startswith(task_dir + os.sep) or not os.path.isfile(path):
            raise ServiceError(404, "NodeFileNotFound", "The specified file does not exist.")
        with open(path, "rb") as fh:
            return 200, fh.read()

    def _terminate_job(self, job):
        job.state, job.changed = "completed", _now()
        for task in job.tasks.values():
            if task.state != "completed":
                self._finish(task, exit_code=None, failure=None, terminated=True)
        auto = ((job.spec.get("poolInfo") or {}).get("autoPoolSpecification") or {})
        if job.auto_pool in self.pools and auto.get("poolLifetimeOption") == "job" and \
                not auto.get("keepAlive"):
            for node in self.pools[job.auto_pool].nodes:
                for proc in node.running.values():
                    _kill(proc)
            del self.pools[job.auto_pool]

    # -- scheduling -------------------------------------------------------------------------------
    def _schedule_loop(self):
        while not self._stop.wait(0.02):
            try:
                with self.lock:
                    self._tick()
            except Exception as err:  # keep the fake service alive; tests see the effects
                print("batch_server tick error:", repr(err))

    def _tick(self):
        now = time.time()
        for pool in self.pools.values():
            if pool.allocation_state == "resizing" and now - pool.created >= self.allocation_delay:
                pool.allocate()
            for node in pool.nodes:
                if node.state == "preempted" and now >= node.preempted_until:
                    node.state = "idle"
        for job in list(self.jobs.values()):
            if job.state == "active" and job.spec.get("onAllTasksComplete") == "terminatejob" \
                    and job.tasks and all(t.state == "completed" for t in job.tasks.values()):
                self._terminate_job(job)
            if job.state != "active" or job.pool_id not in self.pools:
                continue
            pool = self.pools[job.pool_id]
            for task in job.tasks.values():
                if task.state != "active":
                    continue
                nodes = [n for n in pool.nodes if n.free_slots() > 0][:task.instances]
                if len(nodes) < task.instances:
                    continue
                task.state, task.nodes = "running", nodes
                task.exec.update({"startTime": _now()})
                task.node_info = {"nodeId": nodes[0].id, "poolId": pool.id,
                                  "affinityId": nodes[0].id}
                for node in nodes:
                    node.running[task.id] = None   # reserve the slot
                    node.state = "running"
                threading.Thread(target=self._run_task, args=(task,), daemon=True).start()

    def _env(self, node: Node, task_dir: str, wd: str, settings: list, job: Job) -> dict:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": node.root,
               "LANG": "C.UTF-8", "AZ_BATCH_ACCOUNT_NAME": self.account,
               "AZ_BATCH_NODE_ID": node.id, "AZ_BATCH_POOL_ID": node.pool.id,
               "AZ_BATCH_JOB_ID": job.id, "AZ_BATCH_NODE_ROOT_DIR": node.root,
               "AZ_BATCH_NODE_SHARED_DIR": os.path.join(node.root, "shared"),
               "AZ_BATCH_NODE_STARTUP_DIR": os.path.join(node.root, "startup"),
               "AZ_BATCH_TASK_DIR": task_dir, "AZ_BATCH_TASK_WORKING_DIR": wd,
               "AZ_BATCH_NODE_IS_DEDICATED": str(node.dedicated).lower()}
        for item in settings or []:
            env[item["name"]] = item.get("value", "")
        return env

    def _process(self, node, key, command, task_dir, wd, env):
        """Start one command line like Batch on Linux: split into argv, no shell."""
        os.makedirs(wd, exist_ok=True)
        self.task_envs.append({"node": node.id, "task": key, "command": command, "env": env,
                               "start": time.time()})
        out = open(os.path.join(task_dir, "stdout.txt"), "ab")
        err = open(os.path.join(task_dir, "stderr.txt"), "ab")
        try:
            proc = subprocess.Popen(shlex.split(command), cwd=wd, env=env, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            err.write(f"cannot start {command!r}: {exc}\n".encode())
            proc = subprocess.Popen(["false"], start_new_session=True)
        finally:
            out.close()
            err.close()
        return proc

    def _download(self, files: list, into: str) -> str | None:
        for rf in files or []:
            url, rel = rf.get("httpUrl"), rf.get("filePath")
            dest = os.path.normpath(os.path.join(into, rel))
            if not url or not dest.startswith(os.path.normpath(into) + os.sep):
                return f"unsupported resource file {rel!r}"
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    data = resp.read()
            except (urllib.error.URLError, OSError) as exc:
                return f"ResourceFileDownloadFailed: {rel}: {exc}"
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(data)
        return None

    def _prepare(self, node: Node, job: Job) -> str | None:
        """Run the job preparation task once per node per job; an error message if it failed."""
        prep = job.spec.get("jobPreparationTask")
        if not prep:
            return None
        with node.prep_lock:
            if job.id in node.prepared_jobs:
                return None
            return self._run_prep(node, job, prep)

    def _run_prep(self, node: Node, job: Job, prep: dict) -> str | None:
        task_dir = os.path.join(node.root, "workitems", job.id, "jobpreparation")
        wd = os.path.join(task_dir, "wd")
        os.makedirs(wd, exist_ok=True)
        error = self._download(prep.get("resourceFiles"), wd)
        if error:
            return error
        env = self._env(node, task_dir, wd, prep.get("environmentSettings"), job)
        env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = wd
        code = self._process(node, f"{job.id}/prep", prep["commandLine"], task_dir, wd, env).wait()
        if code != 0:
            return f"job preparation task exited with code {code}"
        node.prepared_jobs.add(job.id)
        return None

    def _run_task(self, task: Task):
        job, spec, nodes = task.job, task.spec, task.nodes
        multi = spec.get("multiInstanceSettings")
        for node in nodes:
            error = self._prepare(node, job)
            if error:
                return self._finish(task, exit_code=None, failure={
                    "category": "usererror", "code": "JobPreparationTaskFailed", "message": error})
        dirs, procs = {}, []
        for node in nodes:
            task_dir = os.path.join(node.root, "workitems", job.id, "job-1", task.id)
            if task.exec["requeueCount"]:
                task_dir += f".requeue{task.exec['requeueCount']}"
            dirs[node.id] = task_dir
            os.makedirs(os.path.join(task_dir, "wd"), exist_ok=True)
        task.dirs = dirs
        primary = nodes[0]
        wd0 = os.path.join(dirs[primary.id], "wd")
        error = self._download(spec.get("resourceFiles"), wd0)
        if multi:
            hosts = [n.ip for n in nodes]
            for i, node in enumerate(nodes):
                shared = os.path.join(dirs[node.id], "shared")
                os.makedirs(shared, exist_ok=True)
                error = error or self._download(multi.get("commonResourceFiles"), shared)
        if error:
            return self._finish(task, exit_code=None, failure={
                "category": "usererror", "code": "ResourceFileDownloadFailed", "message": error})
        if task.id in self.faults["fail_tasks"]:
            return self._finish(task, exit_code=1, failure=None)
        envs = {}
        for i, node in enumerate(nodes):
            wd = os.path.join(dirs[node.id], "wd")
            env = self._env(node, dirs[node.id], wd, spec.get("environmentSettings"), job)
            env["AZ_BATCH_TASK_ID"] = task.id
            if multi:
                env.update({"AZ_BATCH_TASK_SHARED_DIR": os.path.join(dirs[node.id], "shared"),
                            "AZ_BATCH_HOST_LIST": ",".join(hosts),
                            "AZ_BATCH_NODE_LIST": ";".join(hosts),
                            "AZ_BATCH_MASTER_NODE": f"{hosts[0]}:6000",
                            "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if i == 0 else "false",
                            # a real node finds its own address from its network interface; the
                            # fake nodes all share loopback, so the server says which one it is
                            "XT_NODE_IP": node.ip})
            envs[node.id] = env
        if multi and multi.get("coordinationCommandLine"):
            coordinators = []
            for node in nodes:
                wd = os.path.join(dirs[node.id], "wd")
                proc = self._process(node, task.id + "/coord", multi["coordinationCommandLine"],
                                     dirs[node.id], wd, envs[node.id])
                with self.lock:
                    node.running[task.id + "/coord"] = proc
                coordinators.append(proc)
            for proc in coordinators:
                proc.wait()
            procs.extend(coordinators)
        proc = self._process(primary, task.id, spec["commandLine"], dirs[primary.id], wd0,
                             envs[primary.id])
        with self.lock:
            primary.running[task.id] = proc
            if task.killed:
                _kill(proc)
        if task.id in self.faults["preempt"] and not primary.dedicated:
            self.faults["preempt"].discard(task.id)
            time.sleep(0.3)
            return self._preempt(task, primary)
        code = proc.wait()
        with self.lock:
            if task.state != "running" or task.nodes != nodes:
                return None
        for p in procs:   # coordination leftovers (background ranks) end with the task
            _kill(p)
        return self._finish(task, exit_code=code, failure=None)

    def _preempt(self, task, node):
        with self.lock:
            node.state, node.preempted_until = "preempted", time.time() + 0.3
            for proc in node.running.values():
                _kill(proc)
            self._release(task)
            task.state = "active"
            task.exec["requeueCount"] += 1
            task.exec.pop("startTime", None)

    def _release(self, task):
        for node in task.nodes:
            for key in [k for k in node.running if k == task.id or k.startswith(task.id + "/")]:
                proc = node.running.pop(key)
                if proc is not None:
                    _kill(proc)
            if not node.running and node.state == "running":
                node.state = "idle"

    def _finish(self, task, exit_code, failure, terminated=False):
        with self.lock:
            if task.state == "completed":
                return
            task.killed = terminated
            nodes = list(task.nodes)
            self._release(task)
            task.state = "completed"
            if terminated and exit_code is None:
                failure = failure or {"category": "usererror", "code": "TaskEnded",
                                      "message": "Task Was Ended by User Request"}
            info = {"endTime": _now(), "result": "success" if exit_code == 0 and not failure
                    else "failure"}
            if exit_code is not None:
                info["exitCode"] = exit_code
            if failure:
                info["failureInfo"] = failure
            task.exec.update(info)
        if nodes and not terminated:
            self._upload_outputs(task, nodes[0], exit_code == 0 and not failure)

    def _upload_outputs(self, task, node, success):
        task_dir = task.dirs.get(node.id)
        if not task_dir:
            return
        wd = os.path.join(task_dir, "wd")
        for out in task.spec.get("outputFiles") or []:
            cond = (out.get("uploadOptions") or {}).get("uploadCondition", "tasksuccess").lower()
            if cond == "tasksuccess" and not success or cond == "taskfailure" and success:
                continue
            container = out["destination"]["container"]
            base, _, sas = container["containerUrl"].partition("?")
            for path in glob.glob(os.path.join(wd, out["filePattern"])):
                name = container.get("path") or os.path.basename(path)
                url = f"{base.rstrip('/')}/{urllib.parse.quote(name)}" + (f"?{sas}" if sas else "")
                with open(path, "rb") as fh:
                    req = urllib.request.Request(url, data=fh.read(), method="PUT", headers={
                        "x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"})
                try:
                    urllib.request.urlopen(req, timeout=30).close()
                except (urllib.error.URLError, OSError) as exc:
                    self.upload_errors.append(f"{task.id}: {name}: {exc}")
                    task.exec["result"] = "failure"
                    task.exec["failureInfo"] = {"category": "usererror",
                                                "code": "FileUploadFailed", "message": str(exc)}


def _kill(proc) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Handler(BaseHTTPRequestHandler):
    batch: BatchServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, payload=None, headers: dict | None = None):
        if isinstance(payload, (bytes, bytearray)):
            data, ctype = bytes(payload), "application/octet-stream"
        elif payload is None:
            data, ctype = b"", None
        else:
            data, ctype = json.dumps(payload).encode(), "application/json;odata=minimalmetadata"
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "00000000-0000-0000-0000-000000000000")
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status, code, message, values=None, headers=None):
        body = {"odata.metadata": "https://batch/$metadata#Microsoft.Azure.Batch.Protocol.Entities"
                ".Container.errors/@Element", "code": code,
                "message": {"lang": "en-US", "value": message}}
        if values:
            body["values"] = [{"key": k, "value": v} for k, v in values.items()]
        self._send(status, body, headers)

    def _dispatch(self):
        server = self.batch
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        server.received.append({"method": self.command, "path": self.path, "headers": headers,
                                "body": raw.decode("utf-8", "replace")})
        if not server.check_signature(self.command, self.path, self.headers):
            return self._error(403, "AuthenticationFailed", "Server failed to authenticate the "
                               "request. Make sure the value of Authorization header is correctly "
                               "formed including the signature.")
        with server.lock:
            if server.faults["throttle"] > 0:
                server.faults["throttle"] -= 1
                return self._error(429, "TooManyRequests", "The request rate is too high.",
                                   headers={"Retry-After": "0.1"})
        url = urllib.parse.urlparse(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        try:
            body = json.loads(raw) if raw else {}
            status, payload = server.handle(self.command, parts,
                                            urllib.parse.parse_qs(url.query), body)
        except ServiceError as err:
            return self._error(err.status, err.code, err.message, err.values)
        self._send(status, payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch
