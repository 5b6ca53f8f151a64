"""Azure Batch compute target (azure-batch 15: ``azure.batch.BatchClient``).

Config::

    external-services:
      mybatch: {type: batch, url: "https://NAME.REGION.batch.azure.com", key: "$vault"}
        # no key: the %xt_login credential (AAD); optional ``name`` = account name (else from url)
    compute-targets:
      batch: {service: mybatch, vm-size: Standard_D2s_v3, azure-image: ubuntu22, nodes: 2,
              low-pri: true, max-runs: 1, setup: batchsetup}
        # low-pri: true|false (all nodes) or a count, with ``dedicated: N``; ``docker: NAME``
        # (a ``dockers`` entry); ``pool: ID`` to use an existing pool; ``distributed: true`` with
        # nodes > 1 gives each run a multi-instance task over ``nodes`` nodes;
        # ``pool-keep-alive: MINUTES``: 0 (default) gives each job its own auto pool that Batch
        # deletes when the job ends; > 0 shares one pool per target spec, deleted once idle that
        # long (checked on later submits and when jobs end);
        # ``requeue-preempted: N`` (default 1) low-priority preemptions a run may survive;
        # ``python: python3``; ``sas-hours: 72``.
    azure-batch-images:
      ubuntu22: {publisher: canonical, offer: 0001-com-ubuntu-server-jammy, sku: 22_04-lts,
                 node-agent-sku-id: "batch.node.ubuntu 22.04", version: latest}

Each run is one Batch task (bulk-created, 100 per request) in one Batch job per xt job. The task
downloads ``runner.py`` and its signed ticket by read-SAS URLs (which live only in the task, never
in the store) and runs it on ``ticket.json`` through ``runner.NODE_BOOTSTRAP`` (which refuses a
runner.py whose sha256 is not ours, and keeps a bytecode cache per node); the launch secret (job
key and the per-path SAS URLs of the run's node access) is the task's ``XT_LAUNCH`` environment
setting, which the runner removes from its environment before anything else runs. Node
stdout/stderr are uploaded on task completion as a backstop, each to a SAS that can write that
one blob. No account key, token or credential is ever put in a task: SAS tokens scoped to single
blobs of the run and the job's own key, nothing else.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

from ...runner.runner import LAUNCH_ENV
from ..errors import AuthError, ConfigError, TargetError
from ..protocol import events, tickets
from ..protocol.events import CANCELLED, FAILED, FINAL, QUEUED
from .base import TEMPLATES, Backend, Launch
from .staging import runner_sha

NODE_XT_HOME = '"$AZ_BATCH_NODE_SHARED_DIR/xt"'   # env cache shared by every task on a node
TASKS_PER_REQUEST = 100                            # the service's addtaskcollection limit
LOG_FILES = ("stdout.txt", "stderr.txt")

# A multi-instance run: each node finds its rank from its address's position in the host list,
# exports the usual torch.distributed variables; rank 0 runs in the application command, others
# are started in the background by the coordination command (which must return).
_RANK = ('ip="${XT_NODE_IP:-$(hostname -I 2>/dev/null | cut -d" " -f1)}"; r=0; '
         'for h in $(echo "$AZ_BATCH_HOST_LIST" | tr "," " "); do [ "$h" = "$ip" ] && break; '
         'r=$((r+1)); done; export RANK=$r NODE_RANK=$r LOCAL_RANK=0 WORLD_SIZE={n} '
         'MASTER_ADDR="${AZ_BATCH_MASTER_NODE%:*}" MASTER_PORT="${AZ_BATCH_MASTER_NODE##*:}"; ')


#: the task properties ``_tasks`` lists (poll: state, exit code, failure, requeues)
TASK_FIELDS = ["id", "state", "executionInfo"]
#: while tasks wait, a poll asks why (the job's scheduling error, the pool's resize errors: two
#: requests) at most this often; a pool that cannot get nodes shows it over minutes, not ms
POOL_CHECK_SECONDS = 5.0

def _shell(script: str) -> str:
    """A Batch command line running ``script`` in sh (Batch does not use a shell by itself)."""
    return "/bin/sh -c " + shlex.quote(script)


def _safe_id(text: str, limit: int = 64) -> str:
    """Batch ids allow letters, digits, ``-`` and ``_`` (at most 64)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)[:limit]


def task_id(run_id: str) -> str:
    return _safe_id(run_id)


def batch_job_id(workspace: str, job_id: str, store=None) -> str:
    """``xt-WS-JOB-HASH``: the hash of the store's description keeps two stores that share a
    Batch account (same workspace and job numbers) apart."""
    tag = hashlib.sha256(str(store.describe() if store else "").encode()).hexdigest()[:6]
    return _safe_id(f"xt-{workspace}-{job_id}"[:57] + f"-{tag}")


def _container_destination(url: str) -> tuple[str, str]:
    """Split a per-blob SAS URL into (container URL + that SAS, blob name) for an OutputFile.

    Batch uploads to ``containerUrl/path`` with the SAS of ``containerUrl``; a blob-scoped SAS
    keeps the node from writing anything but that one blob.
    """
    parts = urllib.parse.urlsplit(url)
    segments = parts.path.lstrip("/").split("/")
    host = parts.hostname or ""
    # path-style endpoints (Azurite, IP addresses) carry the account as the first segment
    first = 1 if host in ("localhost",) or re.fullmatch(r"[\d.]+", host) else 0
    container = "/".join(segments[:first + 1])
    blob = urllib.parse.unquote("/".join(segments[first + 1:]))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + container, parts.query,
                                    "")), blob


def translate(err: Exception, what: str, *, service: str = "", target: str = "") -> Exception:
    """One-line XTError (with the fix) for a Batch SDK error."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, \
        ServiceRequestError
    if isinstance(err, ServiceRequestError):
        return TargetError(f"cannot reach Batch service {service!r} to {what}: "
                           f"{str(err).splitlines()[0]}",
                           hint=f"check external-services.{service}.url and the network")
    if not isinstance(err, HttpResponseError):
        return TargetError(f"Batch {what} failed: {type(err).__name__}: {err}")
    status = getattr(err, "status_code", None)
    error = getattr(err, "error", None)
    code = getattr(error, "code", None) or ""
    message = (getattr(error, "message", None) or str(err)).splitlines()[0]
    details = {d.code: d.message for d in (getattr(error, "details", None) or [])}
    prop = details.get("PropertyName", "")
    tkey = f"compute-targets.{target}"
    if code == "AuthenticationFailed" or (status == 403 and "signature" in message.lower()):
        return AuthError(f"Batch service {service!r} rejected the shared key "
                         f"(403 AuthenticationFailed) while trying to {what}",
                         hint=f"the key is wrong or was rotated: update the vault secret for "
                              f"{service!r} (external-services.{service}.key), then %xt_login")
    if isinstance(err, ClientAuthenticationError) or status == 401 or code in (
            "AuthorizationFailed", "InsufficientAccountPermissions") or status == 403:
        return AuthError(f"Batch service {service!r} refused the request to {what} "
                         f"({status} {code or 'unauthorized'})",
                         hint="run %xt_login again and check your role on the Batch account "
                              "(Contributor), or configure a $vault shared key")
    if prop.lower() == "vmsize":
        return TargetError(f"Batch refused vm-size {details.get('PropertyValue')!r}",
                           key=f"{tkey}.vm-size",
                           hint="use a VM size offered in the account's region, e.g. "
                                "Standard_D2s_v3 (az batch location list-skus)")
    if prop.lower() in ("nodeagentskuid", "imagereference", "publisher", "offer", "sku") or \
            "image" in code.lower():
        return TargetError(f"Batch refused the pool image ({prop or code}: "
                           f"{details.get('PropertyValue', message)!r})", key=f"{tkey}.azure-image",
                           hint="check publisher/offer/sku/node-agent-sku-id in azure-batch-images "
                                "(az batch pool supported-images list)")
    if "quota" in code.lower():
        return TargetError(f"Batch quota reached ({code}) while trying to {what}",
                           hint=f"lower {tkey}.nodes, use low-pri nodes, delete idle pools "
                                "(%xt_pools), or request more quota for the Batch account")
    return TargetError(f"Batch {what} failed: {status} {code}: {message}")


class BatchBackend(Backend):
    """Runs each run as a task on an Azure Batch pool; see the module docstring for config."""

    kind = "batch"
    service_types = ("batch",)
    target_schema = {
        "vm-size": {"type": "string", "description": "VM size, e.g. Standard_D2s_v3"},
        "azure-image": {"type": "string", "description": "azure-batch-images entry"},
        "low-pri": {"type": ["boolean", "integer"],
                    "description": "use low-priority (spot) nodes (true = all `nodes`, or a count)"},
        "dedicated": {"type": "integer", "minimum": 0, "description": "dedicated nodes (rest of `nodes` low-priority)"},
        "nodes": {"type": "integer", "minimum": 1, "description": "nodes per job"},
        "pool": {"type": "string", "description": "existing pool id to use instead of a pool per job"},
        "pool-keep-alive": {"type": "number", "minimum": 0, "description": "minutes an idle pool xt_magic "
                            "made is kept for reuse (default 0: deleted when its last job ends)"},
        "requeue-preempted": {"type": "integer", "minimum": 0, "description": "low-priority preemptions a "
                              "run may survive by requeueing (default 1; 0: fail at once)"},
        "python": {"type": "string", "description": "python on the nodes that starts runner.py (default python3)"},
        "sas-hours": {"type": "number", "minimum": 1, "description": "lifetime of the SAS URLs given to tasks (default 72)"},
        "docker": {"type": "string", "description": "dockers entry (or image) the tasks run in"},
        "distributed": {"type": "boolean", "description": "one process per node with distributed env vars"},
    }
    template = os.path.join(TEMPLATES, "batch.yaml")

    def __init__(self, name: str, target: dict, *, config, store, session=None):
        super().__init__(name, target, config=config, store=store, session=session)
        if not store.remote:
            raise ConfigError(f"target {name!r} runs on Azure Batch, whose nodes cannot see the "
                              "file store", key="xt-services.storage",
                              hint="use an azure-blob storage service for batch targets")
        self.service_name = target.get("service")
        self.service = config.get(f"external-services.{self.service_name}") or {}
        if not self.service.get("url"):
            raise ConfigError("batch service has no url",
                              key=f"external-services.{self.service_name}.url",
                              hint="https://NAME.REGION.batch.azure.com")
        self._client = None
        self._pool_checks: dict[str, tuple[float, str | None]] = {}  # Batch job -> (when, why)

    # -- connection -----------------------------------------------------------------------------
    @property
    def account(self) -> str:
        host = urllib.parse.urlsplit(self.service["url"]).hostname or ""
        return self.service.get("name") or host.split(".")[0]

    def client(self):
        """The BatchClient (shared key from the vault/config, or the login credential)."""
        if self._client is None:
            from azure.batch import BatchClient
            key = self.service.get("key")
            if key:
                from azure.core.credentials import AzureNamedKeyCredential
                from ..auth import vault
                secret = vault.resolve_secret(self.session, self.config,
                                              f"external-services.{self.service_name}.key")
                credential = AzureNamedKeyCredential(self.account, secret)
            else:
                from ..auth.service import credential as login_credential
                credential = login_credential(self.session)
            self._client = BatchClient(self.service["url"].rstrip("/"), credential)
        return self._client

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as err:
            from azure.core.exceptions import AzureError
            if isinstance(err, AzureError):
                raise translate(err, what, service=self.service_name, target=self.name) \
                    from None
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- pools --------------------------------------------------------------------------------
    def node_counts(self) -> tuple[int, int]:
        """(dedicated, low-priority) node counts from ``nodes``, ``low-pri``, ``dedicated``."""
        t = self.target
        nodes = int(t.get("nodes") or 1)
        low = t.get("low-pri", False)
        if isinstance(low, bool):
            return (0, nodes) if low else (nodes, 0)
        low = int(low)
        return int(t.get("dedicated", max(nodes - low, 0))), low

    def pool_spec(self) -> dict:
        """What the pool is made of: its id is a hash of this, so jobs alike share a pool."""
        t = self.target
        image_name = t.get("azure-image")
        image = self.config.get(f"azure-batch-images.{image_name}") if image_name else None
        if not isinstance(image, dict):
            raise ConfigError(f"target {self.name!r} needs an azure-image defined in "
                              "azure-batch-images", key=f"compute-targets.{self.name}.azure-image")
        docker = None
        if t.get("docker"):
            entry = self.config.get(f"dockers.{t['docker']}") or {}
            docker = entry.get("image") or t["docker"]
            if entry.get("registry"):
                docker = f"{entry['registry'].rstrip('/')}/{docker}"
        dedicated, low = self.node_counts()
        return {"vm-size": t.get("vm-size", "Standard_D2s_v3"), "image": dict(image),
                "dedicated": dedicated, "low": low, "slots": int(t.get("max-runs") or 1),
                "docker": docker}

    def pool_id(self) -> str:
        if self.target.get("pool"):
            return self.target["pool"]
        spec = json.dumps(self.pool_spec(), sort_keys=True).encode()
        return _safe_id(f"xt-{self.name}")[:50] + "-" + hashlib.sha256(spec).hexdigest()[:8]

    def ensure_pool(self) -> str:
        """The pool's id, creating it (nodes allocate in the background) if it is missing."""
        from azure.batch import models as m
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        pool_id = self.pool_id()
        client = self.client()
        self.reap_idle_pools(spare=pool_id)   # never the pool this submit is about to use
        try:
            self._call("look up the pool", client.get_pool, pool_id)
            return pool_id
        except TargetError as err:
            if not isinstance(err.__context__, ResourceNotFoundError):
                raise
        if self.target.get("pool"):
            raise TargetError(f"Batch pool {pool_id!r} does not exist",
                              key=f"compute-targets.{self.name}.pool",
                              hint="create it, or remove `pool` to let xt_magic manage one")
        options = m.BatchPoolCreateOptions(id=pool_id, **self._pool_fields())
        try:
            self._call("create the pool", client.create_pool, options)
        except TargetError as err:
            if not isinstance(err.__context__, ResourceExistsError):  # a parallel submit won
                raise
        return pool_id

    def _pool_fields(self) -> dict:
        """Pool properties shared by a named pool and a per-job auto pool."""
        from azure.batch import models as m
        spec = self.pool_spec()
        img = spec["image"]
        vmc = m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(
                publisher=img.get("publisher"), offer=img.get("offer"), sku=img.get("sku"),
                version=str(img.get("version") or "latest")),
            node_agent_sku_id=img.get("node-agent-sku-id"))
        if spec["docker"]:
            vmc.container_configuration = m.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=[spec["docker"]])
        return dict(vm_size=spec["vm-size"], virtual_machine_configuration=vmc,
                    target_dedicated_nodes=spec["dedicated"], target_low_priority_nodes=spec["low"],
                    task_slots_per_node=spec["slots"],
                    enable_inter_node_communication=bool(self.distributed()),
                    metadata=[m.BatchMetadataItem(name="xt-target", value=self.name)])

    def _pool_info(self):
        """An existing pool, the shared pool (``pool-keep-alive`` > 0), or a pool per job that
        Batch deletes when the job ends."""
        from azure.batch import models as m
        if self.target.get("pool") or float(self.target.get("pool-keep-alive") or 0) > 0:
            return m.BatchPoolInfo(pool_id=self.ensure_pool())
        return m.BatchPoolInfo(auto_pool_specification=m.BatchAutoPoolSpecification(
            auto_pool_id_prefix=_safe_id(f"xt-{self.name}")[:20], pool_lifetime_option="job",
            keep_alive=False, pool=m.BatchPoolSpecification(**self._pool_fields())))

    def reap_idle_pools(self, spare: str | None = None) -> list[str]:
        """Delete pools this target created that have had no active job for ``pool-keep-alive``
        minutes. Returns the ids deleted."""
        keep = float(self.target.get("pool-keep-alive") or 0) * 60
        client = self.client()
        deleted = []
        pools = [p for p in self._call("list pools", lambda: list(client.list_pools()))
                 if {i.name: i.value for i in p.metadata or []}.get("xt-target") == self.name]
        if not pools:
            return deleted
        jobs = self._call("list jobs", lambda: list(client.list_jobs()))
        for pool in pools:
            if pool.id == spare:
                continue
            mine = [j for j in jobs if j.pool_info and j.pool_info.pool_id == pool.id]
            if any(j.state not in ("completed", "deleting") for j in mine) or not mine:
                continue
            ends = [j.state_transition_time or j.creation_time for j in mine]
            last = max((e for e in ends if e), default=None)
            if last is None or (datetime.now(timezone.utc) - last) >= timedelta(seconds=keep):
                self._delete_pool(pool.id)
                deleted.append(pool.id)
        return deleted

    def _delete_pool(self, pool_id: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            self._call("delete the pool", self.client().begin_delete_pool, pool_id,
                       polling_interval=1)
        except TargetError as err:
            if not isinstance(err.__context__, ResourceNotFoundError):
                raise

    def distributed(self) -> bool:
        flag = self.target.get("distributed")
        if flag is None:
            flag = self.config.get("general.distributed", False)
        return bool(flag) and int(self.target.get("nodes") or 1) > 1

    # -- submit ---------------------------------------------------------------------------------
    def _sas_seconds(self) -> int:
        return int(float(self.target.get("sas-hours", 72)) * 3600)

    def _runner_argv(self, *args: str) -> str:
        """``python -c NODE_BOOTSTRAP SHA runner.py ARGS``, shell-quoted: the node checks the
        downloaded runner.py against the sha256 of ours and runs it through a bytecode cache."""
        from ...runner import runner as node
        argv = node.node_command(self.target.get("python", "python3"), runner_sha(),
                                 "runner.py", *args)
        return " ".join(shlex.quote(a) for a in argv)

    def _command(self, *args: str, setup_only: bool = False) -> str:
        argv = self._runner_argv(*(["--setup-only"] if setup_only else []), *args)
        return _shell(f"XT_HOME={NODE_XT_HOME} exec {argv}")

    def _resource_files(self, paths: dict[str, str]) -> list:
        """ResourceFiles for {local name: store path}, each by a read-only SAS for that blob."""
        from azure.batch import models as m
        urls = self.store.node_access(read=list(paths.values()), write=[], append=[],
                                      expiry_seconds=self._sas_seconds()).urls
        return [m.ResourceFile(http_url=urls[p], file_path=name) for name, p in paths.items()]

    @staticmethod
    def _environment(launch: Launch, secret: dict) -> list:
        """The task's environment: ids, and the launch secret (taken out by the runner first)."""
        from azure.batch import models as m
        return [m.EnvironmentSetting(name="XT_RUN_ID", value=launch.run_id),
                m.EnvironmentSetting(name="XT_JOB_ID", value=launch.job_id),
                m.EnvironmentSetting(name=LAUNCH_ENV, value=json.dumps(secret))]

    def _log_outputs(self, run_id: str) -> list:
        """Backstop upload of the node's stdout/stderr, each to its own write-only blob SAS."""
        from azure.batch import models as m
        paths = [self.layout.node_log(run_id, name) for name in LOG_FILES]
        urls = self.store.node_access(read=[], write=paths, append=[],
                                      expiry_seconds=self._sas_seconds()).urls
        outs = []
        for name, path in zip(LOG_FILES, paths):
            container_url, blob = _container_destination(urls[path])
            outs.append(m.OutputFile(
                file_pattern=f"../{name}",
                destination=m.OutputFileDestination(container=m.OutputFileBlobContainerDestination(
                    container_url=container_url, path=blob)),
                upload_options=m.OutputFileUploadConfiguration(upload_condition="taskcompletion")))
        return outs

    def _rank_tickets(self, launch: Launch, n: int) -> tuple[dict[str, str], dict]:
        """Signed tickets for ranks 1..n-1 of a multi-node run: same bundle, their own
        events/console/metrics/outputs under ``runs/RUN/rank{r}/`` so rank 0 alone reports the
        run's state. Returns ({local file name: store path}, the launch secret extended with
        the ranks' access)."""
        key = bytes.fromhex(launch.launch_secret["key"])
        lay, ticket, access = launch.layout, launch.ticket, launch.access
        out = {}
        for r in range(1, n):
            rank_ticket = tickets.sign(dict(
                ticket, paths=lay.rank_paths(launch.run_id, r),
                env=dict(ticket.get("env") or {}, XT_RANK=str(r))), key)
            access = tickets.node_access(self.store, rank_ticket, access)
            path = lay.rank_ticket(launch.run_id, r)
            self.store.write_bytes(path, json.dumps(rank_ticket, indent=1).encode())
            out[f"rank{r}.json"] = path
        return out, tickets.launch_secret(key, access)

    def _task(self, launch: Launch, pool_slots: int):
        from azure.batch import models as m
        secret = launch.launch_secret
        constraints = m.BatchTaskConstraints(max_task_retry_count=0)
        if launch.max_seconds:
            constraints.max_wall_clock_time = timedelta(seconds=int(launch.max_seconds))
        files = {"runner.py": launch.runner_path, "ticket.json": launch.ticket_path}
        task = m.BatchTaskCreateOptions(
            id=task_id(launch.run_id), display_name=launch.run_id,
            command_line=self._command("ticket.json"),
            constraints=constraints, output_files=self._log_outputs(launch.run_id))
        n = int(self.target.get("nodes") or 1)
        if self.distributed():
            rank_files, secret = self._rank_tickets(launch, n)
            files.update(rank_files)
            rank = _RANK.replace("{n}", str(n))
            worker = (f'cd "$AZ_BATCH_TASK_SHARED_DIR" && XT_HOME={NODE_XT_HOME} nohup '
                      f'{self._runner_argv()} "rank$r.json" > "rank$r.log" 2>&1 &')
            task.multi_instance_settings = m.MultiInstanceSettings(
                number_of_instances=n, common_resource_files=self._resource_files(files),
                coordination_command_line=_shell(rank + f'[ "$r" = 0 ] || {{ {worker} }}'))
            task.command_line = _shell(
                rank + f'cd "$AZ_BATCH_TASK_SHARED_DIR" && XT_HOME={NODE_XT_HOME} exec '
                       f'{self._runner_argv("ticket.json")}')
        else:
            task.resource_files = self._resource_files(files)
            if pool_slots > 1:
                task.required_slots = 1
        task.environment_settings = self._environment(launch, secret)
        if self.pool_spec()["docker"]:
            task.container_settings = m.BatchTaskContainerSettings(
                image_name=self.pool_spec()["docker"], container_run_options="--rm")
        return task

    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """One Batch job per xt job on the target's pool; one task per run, bulk-created."""
        from azure.batch import models as m
        from azure.core.exceptions import ResourceExistsError
        if not launches:
            return
        client = self.client()
        pool_info = self._pool_info()
        first = launches[0]
        bjob = batch_job_id(first.workspace, job_id, self.store)
        prep = None
        if first.ticket.get("setup"):
            # realise the setup once per node for this job, before any of its runs start there
            prep = m.BatchJobPreparationTask(
                command_line=self._command("ticket.json", setup_only=True),
                resource_files=self._resource_files({"runner.py": first.runner_path,
                                                     "ticket.json": first.ticket_path}),
                environment_settings=self._environment(first, first.launch_secret),
                wait_for_success=True, rerun_on_node_reboot_after_success=True)
        options = m.BatchJobCreateOptions(
            id=bjob, display_name=job_id, pool_info=pool_info,
            job_preparation_task=prep,
            metadata=[m.BatchMetadataItem(name="xt-target", value=self.name)])
        more = any(launch.open_job for launch in launches)
        try:
            self._call("create the job", client.create_job, options)
        except TargetError as err:
            exists = isinstance(err.__context__, ResourceExistsError)
            if not exists:
                raise
            if not (more and self._open_job(bjob, job_id)):  # else: a search adding runs
                raise TargetError(f"Batch job {bjob!r} already exists", hint="a job id is "
                                  "reused: check that general.workspace and the store are the "
                                  "ones this job was allocated in") from None
        slots = self.pool_spec()["slots"] if not self.target.get("pool") else 1
        # SAS signing and the queued events are per run: fan out (a sweep has hundreds)
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=min(16, len(launches)))
        with pool:
            tasks = list(pool.map(lambda launch: self._task(launch, slots), launches))
        try:
            client.create_tasks(bjob, tasks, max_concurrency=4 if len(tasks) > 400 else 0)
        except Exception as err:
            failures = getattr(err, "failure_tasks", None)
            if failures:
                first_fail = failures[0]
                code = getattr(first_fail.error, "code", "") if first_fail.error else ""
                raise TargetError(f"Batch refused {len(failures)} of {len(tasks)} tasks "
                                  f"(first: {first_fail.task_id}: {code})") from None
            errors = getattr(err, "errors", None)
            raise translate(errors[0] if errors else err, "create tasks",
                            service=self.service_name, target=self.name) from None
        # now that the tasks are in, Batch ends the job (and a per-job pool) after the last one;
        # a search's job stays open for its next runs until finish()
        if not more:
            self._call("update the job", client.update_job, bjob,
                       m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
        host = pool_info.pool_id or "auto-pool"
        with ThreadPoolExecutor(max_workers=min(16, len(launches))) as pool:
            list(pool.map(lambda launch: events.append(
                self.store, launch.ticket["paths"]["events"], QUEUED,
                backend_id=f"{bjob}/{task_id(launch.run_id)}", host=host, target=self.name),
                launches))

    # -- status ---------------------------------------------------------------------------------
    def _open_job(self, bjob: str, job_id: str) -> bool:
        """Whether Batch job ``bjob`` is this job's and still takes tasks."""
        try:
            job = self.client().get_job(bjob)
        except Exception:  # noqa: BLE001 - not ours to add to: the create error is raised
            return False
        return job.state == "active" and job.display_name == job_id

    def finish(self, job_id: str) -> None:
        """A search is over: end its Batch job (and a per-job pool) after its last task."""
        from azure.batch import models as m
        bjob = batch_job_id(self.layout.ws, job_id, self.store)
        tasks = self._tasks(bjob)
        if tasks is None:
            return
        if all(t.state == "completed" for t in tasks.values()):
            self._cleanup(bjob, force=True)
        else:
            self._call("update the job", self.client().update_job, bjob,
                       m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))

    def _tasks(self, bjob: str) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            # only what poll and finish read: the full task models cost ~5 ms each to decode
            return {t.id: t for t in self.client().list_tasks(bjob, select=TASK_FIELDS)}
        except ResourceNotFoundError:
            return None
        except Exception as err:
            raise translate(err, "list tasks", service=self.service_name, target=self.name) \
                from None

    def _stderr_tail(self, bjob: str, tid: str) -> str:
        try:
            data = b"".join(self.client().download_task_file(bjob, tid, "stderr.txt"))
        except Exception:  # noqa: BLE001 - the tail is only a hint for the reason
            return ""
        lines = data.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:300] if lines else ""

    def _pool_problem(self, bjob: str) -> str | None:
        """Why the job's tasks cannot start (scheduling error, a resize error that leaves the
        pool without nodes), as a one-line reason; None if there is no such problem. Asked at
        most every POOL_CHECK_SECONDS per Batch job."""
        now = time.monotonic()
        when, why = self._pool_checks.get(bjob, (None, None))
        if when is None or now - when >= POOL_CHECK_SECONDS:
            why = self._ask_pool_problem(bjob)
            self._pool_checks[bjob] = (now, why)
        return why

    def _ask_pool_problem(self, bjob: str) -> str | None:
        try:
            job = self.client().get_job(bjob)
            info = job.execution_info
            if info and info.scheduling_error:
                e = info.scheduling_error
                return f"Batch cannot schedule the job: {e.code}: {e.message}"
            pool_id = (info and info.pool_id) or (job.pool_info and job.pool_info.pool_id)
            pool = self.client().get_pool(pool_id) if pool_id else None
        except Exception:  # noqa: BLE001 - only a better reason; the next poll tries again
            return None
        if pool is None:
            return None
        if pool.allocation_state != "steady" or not pool.resize_errors:
            return None
        if (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0) > 0:
            return None
        e = pool.resize_errors[0]
        return str(translate_resize(e.code, e.message, self.name))

    def poll(self, job_id: str, run_ids: list[str]) -> list[str]:
        """Reconcile runs from Batch task states (the runner's own events win)."""
        if not run_ids:
            return []
        bjob = batch_job_id(self.layout.ws, job_id, self.store)
        tasks = self._tasks(bjob)
        allowed = int(self.target.get("requeue-preempted", 1))
        pool_problem = None
        touched = []
        for run in run_ids:
            task = (tasks or {}).get(task_id(run))
            exec_info = task.execution_info if task is not None else None
            requeues = (exec_info.requeue_count or 0) if exec_info else 0
            if task is not None and not requeues and task.state != "completed":
                if task.state != "active":
                    continue  # preparing/running: the runner reports for itself
                if pool_problem is None:
                    pool_problem = self._pool_problem(bjob) or ""
                if not pool_problem:
                    continue  # waiting for a node
            info = self._state(run)  # read after the tasks: a finished task's own final event
            touched.append(run)  # its events moved: its own final event, or the one made here
            if info["state"] in FINAL:  # is already there
                continue
            if task is None:
                if info["state"] == QUEUED:  # submitted, yet gone
                    self._fail(run, "the Batch job or task is gone (deleted outside xt?)")
                continue
            seen = sum(1 for e in info["events"]
                       if e.get("state") == QUEUED and e.get("preempted"))
            if requeues > seen:
                if seen < allowed:
                    self._event(run, QUEUED, preempted=requeues, reason="low-priority node "
                                f"preempted; requeued ({requeues} of {allowed} allowed)")
                else:
                    self._terminate(bjob, task.id)
                    self._fail(run, f"low-priority node preempted {requeues} time(s) "
                               f"(requeue-preempted: {allowed}); use dedicated nodes or raise "
                               "compute-targets." + self.name + ".requeue-preempted")
                    continue
            if task.state == "completed":
                self._fail(run, self._task_reason(bjob, task), exit_code=(
                    exec_info.exit_code if exec_info else None))
            elif task.state == "active" and pool_problem:
                self._terminate(bjob, task.id)
                self._fail(run, pool_problem)
        if tasks and all(t.state == "completed" for t in tasks.values()):
            self._cleanup(bjob)
        return touched

    def _task_reason(self, bjob: str, task) -> str:
        e = task.execution_info
        if e and e.failure_info:
            return f"Batch task failed: {e.failure_info.code}: {e.failure_info.message}"
        tail = self._stderr_tail(bjob, task.id)
        code = e.exit_code if e else None
        return (f"runner exited with code {code} before recording a result"
                + (f": {tail}" if tail else ""))

    def _fail(self, run_id: str, reason: str, exit_code=None) -> None:
        self._event(run_id, FAILED, reason=reason, exit_code=exit_code)

    def _terminate(self, bjob: str, tid: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            self.client().terminate_task(bjob, tid)
        except ResourceNotFoundError:
            pass
        except Exception as err:
            raise translate(err, "terminate a task", service=self.service_name,
                            target=self.name) from None

    def _cleanup(self, bjob: str, force: bool = False) -> None:
        """Terminate the Batch job; delete the pool when nothing else uses it (keep-alive 0).
        A job still open for more tasks (a search between runs) is left alone unless ``force``
        (``finish``)."""
        try:
            from azure.batch.models import BatchJobTerminateOptions
        except ImportError:  # 15.1 keeps it private, yet terminating without it fails in the SDK
            from azure.batch.models._models import BatchJobTerminateOptions
        from azure.core.exceptions import ResourceNotFoundError
        client = self.client()
        try:
            job = client.get_job(bjob)
            if not force and job.state == "active" and \
                    getattr(job, "all_tasks_complete_mode", None) == "noaction":
                return  # its search adds the next run; finish() ends it
            if job.state == "active":
                client.begin_terminate_job(bjob, BatchJobTerminateOptions(
                    termination_reason="xt: all runs ended"), polling_interval=1)
        except ResourceNotFoundError:
            return
        except Exception as err:
            raise translate(err, "terminate the job", service=self.service_name,
                            target=self.name) from None
        if not self.target.get("pool"):
            self.reap_idle_pools()

    def cancel(self, job_id: str, run_ids: list[str], reason: str | None = None) -> None:
        """Terminate the runs' tasks (and the job once none is left) and record ``cancelled``."""
        bjob = batch_job_id(self.layout.ws, job_id, self.store)
        tasks = self._tasks(bjob) or {}
        for run in run_ids:
            tid = task_id(run)
            if tid in tasks and tasks[tid].state != "completed":
                self._terminate(bjob, tid)
            if self._state(run)["state"] not in FINAL:
                self._event(run, CANCELLED, reason=reason or "cancelled by user")
        tasks = self._tasks(bjob)
        if tasks and all(t.state == "completed" for t in tasks.values()):
            self._cleanup(bjob)



def translate_resize(code: str, message: str, target: str) -> TargetError:
    """A pool resize error as a run's failure reason / a one-line error."""
    hint = "see %xt_pools"
    if "quota" in (code or "").lower():
        hint = (f"request more Batch quota, lower compute-targets.{target}.nodes, or switch "
                "between low-pri and dedicated nodes")
    elif "vmsize" in (code or "").lower() or "sku" in (code or "").lower():
        hint = f"choose another compute-targets.{target}.vm-size"
    return TargetError(f"Batch pool could not get nodes: {code}: {message}", hint=hint)


# -- %xt_pools ----------------------------------------------------------------------------------
class PoolTable(list):
    """Rows (dicts) for %xt_pools; shows as a table in text and HTML."""

    COLUMNS = ("target", "pool", "vm-size", "state", "allocation", "dedicated", "low-pri",
               "nodes", "progress")

    def _rows(self):
        return [[str(row.get(c, "")) for c in self.COLUMNS] for row in self]

    def __repr__(self) -> str:
        if not self:
            return "no Batch pools"
        rows = [list(self.COLUMNS)] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.COLUMNS))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)

    def _repr_html_(self) -> str:
        import html
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in self._rows())
        return f"<table><tr>{head}</tr>{body}</table>" if self else "<i>no Batch pools</i>"


def _progress(pool) -> str:
    want = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
    have = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
    if pool.resize_errors:
        e = pool.resize_errors[0]
        return f"resize error {e.code}: {e.message}"
    if pool.allocation_state == "resizing":
        return f"resizing: {have}/{want} nodes"
    return "ready" if have >= want else f"{have}/{want} nodes"


def list_pools(session, target: str | None = None) -> PoolTable:
    """Pools of every batch target (or just ``target``), with node counts and states."""
    from . import backend_kind, get_backend
    cfg = session.config()
    targets = cfg.get("compute-targets") or {}
    names = [target] if target else [n for n, t in targets.items() if isinstance(t, dict)
                                     and _is_batch(cfg, n, t, backend_kind)]
    table, seen = PoolTable(), set()
    for name in names:
        backend = get_backend(session, name, cfg)
        if not isinstance(backend, BatchBackend):
            raise ConfigError(f"target {name!r} is not an Azure Batch target",
                              key=f"compute-targets.{name}")
        if backend.service_name in seen:
            continue
        seen.add(backend.service_name)
        client = backend.client()
        pools = backend._call("list pools", lambda: list(client.list_pools()))
        for pool in pools:
            meta = {i.name: i.value for i in pool.metadata or []}
            if target and pool.id != backend.target.get("pool") and meta.get("xt-target") != target:
                continue
            nodes = backend._call("list nodes", lambda: list(client.list_nodes(pool.id)))
            states: dict[str, int] = {}
            for node in nodes:
                states[str(node.state)] = states.get(str(node.state), 0) + 1
            table.append({
                "target": meta.get("xt-target", ""), "pool": pool.id, "vm-size": pool.vm_size,
                "state": str(pool.state), "allocation": str(pool.allocation_state),
                "dedicated": f"{pool.current_dedicated_nodes or 0}/"
                             f"{pool.target_dedicated_nodes or 0}",
                "low-pri": f"{pool.current_low_priority_nodes or 0}/"
                           f"{pool.target_low_priority_nodes or 0}",
                "nodes": ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "-",
                "progress": _progress(pool)})
    return table


def _is_batch(cfg, name, target, backend_kind) -> bool:
    try:
        return backend_kind(cfg, name, target) == "batch"
    except ConfigError:
        return False
