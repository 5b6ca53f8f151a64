"""Azure Batch target end to end: the real BatchClient -> local Batch server (tests/batch_server)
-> task processes running the real runner -> Azurite blobs (SAS) -> results in the client."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from xt_magic.core.errors import AuthError, ConfigError, TargetError
from xt_magic.core.jobs import control
from xt_magic.core.jobs import submit as jobs_submit
from xt_magic.core.protocol import events as states
from xt_magic.core.session import get_session
from runner_helpers import wait_for

pytestmark = pytest.mark.azurite


def submit(source, namespace=None, **kw):
    return jobs_submit.run_cell(get_session(), source, dict(namespace or {}), **kw)


def wait_state(job, run, want, timeout=60):
    def check():
        job.refresh()
        return job.state(run) in want
    wait_for(check, timeout, f"{run} to reach {want} (is {job.state(run)})")
    return job.info(run)


def store():
    from xt_magic.core.storage import get_store
    return get_store(get_session())


def blob_texts(st) -> dict[str, bytes]:
    return {p: st.read_bytes(p) for p in st.list("")}


def assert_no_secrets(server, secrets):
    """Canary scan: no secret in anything the Batch service received or any task process got,
    nor in any blob of the store."""
    seen = [json.dumps(r) for r in server.received] + [json.dumps(e) for e in server.task_envs]
    seen += [v.decode("utf-8", "replace") for v in blob_texts(store()).values()]
    for secret in secrets:
        for text in seen:
            assert secret not in text, "a secret leaked to the Batch service, a node or a blob"
    assert not any("Authorization" in r["headers"] for r in server.received)


def http(method, url, data=b"", headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def tasks_sent(server) -> list[dict]:
    out = []
    for r in server.received:
        if r["method"] == "POST" and r["path"].split("?")[0].endswith("/addtaskcollection"):
            out.extend(json.loads(r["body"])["value"])
    return out


# ------------------------------------------------------------------------------------------------
def test_single_cell_job_results_back_and_no_secret_anywhere(batch_config):
    server = batch_config["server"]
    job = submit("y = x * 2\nprint('hello from batch', x)", {"x": 21}, outputs=["y"])
    job.wait(timeout=60, progress=False)
    run = job.runs[0]
    assert job.state(run) == "completed", job.info(run)
    assert job.results()["y"] == 42
    st = store()
    assert b"hello from batch 21" in st.read_bytes(f"ws1/runs/{run}/console.txt")
    # the backstop upload of the node's logs on task completion, by a one-blob SAS
    wait_for(lambda: st.exists(f"ws1/runs/{run}/node/stdout.txt"), 10, "node log upload")
    (task,) = tasks_sent(server)
    assert task["commandLine"].startswith("/bin/sh -c ")
    assert {f["filePath"] for f in task["resourceFiles"]} == {"runner.py", "ticket.json"}
    for f in task["resourceFiles"]:
        assert "sp=r&" in f["httpUrl"] and "sr=b" in f["httpUrl"]
    for out in task["outputFiles"]:
        assert "sr=b" in out["destination"]["container"]["containerUrl"]
    # all runs ended: the Batch job is terminated and the pool (keep-alive 0) deleted
    wait_for(lambda: server.jobs[list(server.jobs)[0]].state == "completed", 10, "job terminated")
    wait_for(lambda: not server.pools, 10, "pool deleted")
    from fixtures.azurite import ACCOUNT_KEY
    assert_no_secrets(server, [server.key, ACCOUNT_KEY])


def test_sweep_of_50_runs_bulk_created_through_throttling(batch_config):
    server = batch_config["server"]
    batch_config["write"](**{"max-runs": 10})
    server.faults["throttle"] = 3   # 429 + Retry-After: the SDK's retry policy rides it out
    job = submit("score = lr * 10", hp={"lr": list(range(50))}, outputs=["score"])
    assert len(job.runs) == 50
    calls = [r for r in server.received if r["path"].split("?")[0].endswith("/addtaskcollection")]
    assert len(calls) == 1 and len(json.loads(calls[0]["body"])["value"]) == 50
    assert server.faults["throttle"] == 0, "the 429s were answered and retried"
    job.wait(timeout=120, progress=False)
    assert job.states() == {"completed": 50}
    res = job.results()
    assert sorted(res["score"].values()) == [i * 10 for i in range(50)]


def test_more_than_100_tasks_go_in_chunks_of_100(batch_config):
    """Bulk creation itself (no runs executed): 101 tasks -> 2 addtaskcollection calls."""
    from xt_magic.core.compute import get_backend
    from xt_magic.core.compute.base import Launch
    server = batch_config["server"]
    batch_config["write"](nodes=1)
    server.faults["resize_error"] = "AccountCoreQuotaReached"   # nodes never come: nothing runs
    backend = get_backend(get_session(), "batch")
    st = store()
    st.write_bytes("ws1/jobs/job9/bundle/runner.py", b"")
    launches = []
    for i in range(1, 102):
        path = f"ws1/runs/run9.{i}/ticket.json"   # never read: no node ever comes up
        ticket = {"job": "job9", "run": f"run9.{i}", "workspace": "ws1",
                  "paths": {"events": f"ws1/runs/run9.{i}/events.jsonl"}, "setup": None}
        launches.append(Launch(f"run9.{i}", "job9", "ws1", ticket, path,
                               {"key": "00" * 32, "access": {"kind": "urls", "urls": {}}}))
    backend.submit("job9", launches)
    calls = [json.loads(r["body"])["value"] for r in server.received
             if r["path"].split("?")[0].endswith("/addtaskcollection")]
    assert sorted(len(c) for c in calls) == [1, 100]
    (bjob,) = server.jobs.values()
    assert bjob.id.startswith("xt-ws1-job9-") and len(bjob.tasks) == 101


def test_multi_node_run_sees_rank_world_size_and_master(batch_config):
    server = batch_config["server"]
    batch_config["write"](nodes=2, distributed=True, **{"max-runs": 1})
    cell = ("import os\nenv = {k: os.environ.get(k) for k in "
            "('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}\nprint('ENV', env)")
    job = submit(cell, outputs=["env"])
    job.wait(timeout=60, progress=False)
    run = job.runs[0]
    assert job.state(run) == "completed", job.info(run)
    env = job.results()["env"]
    assert env == {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.4", "MASTER_PORT": "6000"}
    st = store()
    rank1 = wait_for(lambda: st.read_from(f"ws1/runs/{run}/rank1/console.txt", 0), 20,
                     "rank 1 console")
    assert b"'RANK': '1'" in rank1 and b"'WORLD_SIZE': '2'" in rank1
    (task,) = tasks_sent(server)
    assert task["multiInstanceSettings"]["numberOfInstances"] == 2
    # rank 1 reports to its own paths, so the run's state is rank 0's alone
    events = states.parse(st.read_bytes(f"ws1/runs/{run}/events.jsonl"))
    assert [e["state"] for e in events].count("completed") == 1
    from fixtures.azurite import ACCOUNT_KEY
    assert_no_secrets(server, [server.key, ACCOUNT_KEY])


@pytest.mark.parametrize("allowed,final", [(1, "completed"), (0, "failed")])
def test_low_priority_preemption_requeues_once_or_fails(batch_config, allowed, final):
    server = batch_config["server"]
    batch_config["write"](**{"low-pri": True, "requeue-preempted": allowed})
    job = submit("import time\ntime.sleep(2.5)\ndone = 1", outputs=["done"])
    run = job.runs[0]
    server.faults["preempt"].add(run.replace(".", "-"))
    info = wait_state(job, run, states.FINAL, timeout=60)
    assert info["state"] == final, info
    events = states.parse(store().read_bytes(f"ws1/runs/{run}/events.jsonl"))
    if final == "completed":
        assert any(e.get("preempted") and "requeued" in e["reason"] for e in events)
    else:
        assert "preempted" in info["reason"] and "requeue-preempted" in info["reason"]


def test_cancel_terminates_task_and_job(batch_config):
    server = batch_config["server"]
    job = submit("import time\ntime.sleep(60)")
    run = job.runs[0]
    wait_state(job, run, {"running"}, timeout=30)
    t0 = time.monotonic()
    control.cancel(get_session(), job.id)
    assert job.refresh().state(run) == "cancelled"
    (bjob,) = server.jobs.values()
    assert bjob.tasks[run.replace(".", "-")].state == "completed"
    assert bjob.state == "completed"
    node = server.pools and list(server.pools.values())[0].nodes[0]
    assert not node or not node.running
    assert time.monotonic() - t0 < 20


def test_task_failure_before_runner_reports_gives_reason(batch_config):
    server = batch_config["server"]
    batch_config["write"](python="/no/such/python3")
    job = submit("x = 1")
    info = wait_state(job, job.runs[0], states.FINAL, timeout=30)
    assert info["state"] == "failed"
    assert "runner exited with code" in info["reason"] and "/no/such/python3" in info["reason"]
    # injected task failure: the node's process exits 1 before the runner ever starts
    batch_config["write"]()
    server.faults["fail_tasks"].add("run2-1")
    job = submit("x = 1")
    info = wait_state(job, job.runs[0], states.FINAL, timeout=30)
    assert job.runs[0] == "run2.1" and info["state"] == "failed"
    assert info["reason"].startswith("runner exited with code 1") and info["exit_code"] == 1


def test_wrong_shared_key_is_one_line_with_the_fix(batch_config):
    import base64
    batch_config["write"](key=base64.b64encode(b"not the key" * 3).decode())
    with pytest.raises(AuthError) as err:
        submit("x = 1")
    text = str(err.value)
    assert "\n" not in text
    assert "rejected the shared key" in text and "403 AuthenticationFailed" in text
    assert "vault secret" in text and "xtbatch" in text
    assert err.value._render_traceback_() == [f"AuthError: {text}"]


def test_login_credential_path_needs_a_login(batch_config):
    cfg = batch_config["write"]()
    del cfg["external-services"]["xtbatch"]["key"]   # no key: the %xt_login (AAD) credential
    import yaml
    with open("xt_config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)
    get_session().invalidate()
    with pytest.raises(AuthError, match="not logged in to Azure — run %xt_login first"):
        submit("x = 1")


def test_bad_vm_size_and_quota_errors_name_the_fix(batch_config):
    batch_config["write"](**{"vm-size": "Huge_9000"})
    with pytest.raises(TargetError) as err:
        submit("x = 1")
    assert "vm-size 'Huge_9000'" in str(err.value) and "compute-targets.batch.vm-size" in str(
        err.value) and "\n" not in str(err.value)

    cfg = batch_config["write"]()
    cfg["azure-batch-images"]["ubuntu"]["node-agent-sku-id"] = "ubuntu 22.04"
    import yaml
    with open("xt_config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)
    get_session().invalidate()
    with pytest.raises(TargetError, match="compute-targets.batch.azure-image: Batch refused the "
                                          "pool image .*supported-images"):
        submit("x = 1")

    batch_config["server"].faults["resize_error"] = "AccountCoreQuotaReached"
    batch_config["write"]()
    job = submit("x = 1")
    info = wait_state(job, job.runs[0], states.FINAL, timeout=30)
    assert info["state"] == "failed" and "AccountCoreQuotaReached" in info["reason"]
    assert "quota" in info["reason"]


def test_sas_of_one_run_cannot_write_another_runs_outputs(batch_config):
    job = submit("v = lr", hp={"lr": [1, 2]}, outputs=["v"])
    job.wait(timeout=60, progress=False)
    run1, run2 = job.runs
    st = store()
    ticket1 = json.loads(st.read_bytes(f"ws1/runs/{run1}/ticket.json"))
    assert "sig=" not in json.dumps(ticket1)  # the stored ticket holds no URL
    t1 = [t for t in tasks_sent(batch_config["server"]) if t["id"] == run1.replace(".", "-")][0]
    env1 = {e["name"]: e["value"] for e in t1["environmentSettings"]}
    urls1 = json.loads(env1["XT_LAUNCH"])["access"]["urls"]  # the launch secret, task env only
    events1 = urls1[f"ws1/runs/{run1}/events.jsonl"]
    # run1's SAS, pointed at run2's paths: refused
    sas = events1.split("?", 1)[1]
    base = events1.split("?", 1)[0].replace(run1, run2)
    assert http("PUT", f"{base}?{sas}", b"x", {"x-ms-blob-type": "BlockBlob"}) == 403
    assert http("PUT", f"{base}?comp=appendblock&{sas}", b"x") == 403
    vars2 = urls1[f"ws1/runs/{run1}/outputs/vars.pkl"].split("?")[0].replace(run1, run2)
    assert http("PUT", vars2 + "?" + urls1[f"ws1/runs/{run1}/outputs/vars.pkl"].split("?")[1],
                b"evil", {"x-ms-blob-type": "BlockBlob"}) == 403
    # the backstop OutputFile SAS of run1's task cannot write run2's logs either
    dest = t1["outputFiles"][0]["destination"]["container"]
    url, _, sas = dest["containerUrl"].partition("?")
    assert http("PUT", f"{url}/ws1/runs/{run2}/node/stdout.txt?{sas}", b"x",
                {"x-ms-blob-type": "BlockBlob"}) == 403
    assert http("PUT", f"{url}/{dest['path']}?{sas}", b"own log ok",
                {"x-ms-blob-type": "BlockBlob"}) == 201
    assert job.results()["v"] == {run1: 1, run2: 2}


def test_setup_realised_by_job_preparation_once_per_node(batch_config):
    server = batch_config["server"]
    batch_config["write"](setup="nodeenv", **{"max-runs": 2})
    job = submit("import os\ns = os.environ.get('XT_TEST_SETUP')", hp={"i": [1, 2, 3]},
                 outputs=["s"])
    job.wait(timeout=60, progress=False)
    assert set(job.results()["s"].values()) == {"activated"}
    preps = [e for e in server.task_envs if e["task"].endswith("/prep")]
    assert len(preps) == 1 and "--setup-only" in preps[0]["command"]


def test_file_store_with_batch_target_is_a_config_error(batch_config, tmp_path):
    import yaml
    cfg = batch_config["write"]()
    cfg["external-services"]["teamstore"] = {"type": "storage", "provider": "store-file",
                                             "path": str(tmp_path / "fs")}
    with open("xt_config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)
    get_session().invalidate()
    with pytest.raises(ConfigError, match="file store"):
        submit("x = 1")


def test_xt_pools_lists_pools_with_progress(batch_config, ip):
    server = batch_config["server"]
    batch_config["write"](nodes=3, **{"low-pri": 1, "pool-keep-alive": 5})
    job = submit("x = 1")
    table = ip.run_line_magic("xt_pools", "")
    assert len(table) == 1 and table[0]["target"] == "batch"
    wait_for(lambda: ip.run_line_magic("xt_pools", "")[0]["progress"] == "ready", 10, "ready")
    row = ip.run_line_magic("xt_pools", "--target batch")[0]
    assert row["dedicated"] == "2/2" and row["low-pri"] == "1/1"
    assert "ready" in repr(ip.run_line_magic("xt_pools", ""))
    job.wait(timeout=30, progress=False)
    wait_for(lambda: list(server.jobs.values())[0].state == "completed", 10, "job ended")
    assert server.pools, "pool-keep-alive keeps the idle pool for reuse"
    job2 = submit("x = 2")
    assert len(server.pools) == 1   # the same pool served the second job
    job2.wait(timeout=30, progress=False)


def test_shared_key_from_the_vault_after_login(batch_config, aad_vault, monkeypatch):
    """`key: $vault`: the Batch key is read from Key Vault with the login credential, used to
    sign requests, and appears nowhere the service, the nodes or the store can see."""
    import yaml
    from xt_magic.core.auth import service as auth
    server = batch_config["server"]
    aad_vault.env(monkeypatch)
    aad_vault.secrets["xtbatch"] = server.key
    cfg = batch_config["write"](key="$vault")
    cfg["external-services"]["teamvault"] = {"type": "vault", "url": aad_vault.vault_url}
    cfg["xt-services"]["vault"] = "teamvault"
    with open("xt_config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)
    get_session().invalidate()
    with pytest.raises(AuthError, match="needs a login"):
        submit("x = 1")
    auth.login(get_session(), method="service-principal")
    job = submit("y = 7", outputs=["y"])
    job.wait(timeout=60, progress=False)
    assert job.results()["y"] == 7
    from fixtures.azurite import ACCOUNT_KEY
    assert_no_secrets(server, [server.key, ACCOUNT_KEY, aad_vault.client_secret])


def test_shared_pool_is_reaped_after_its_idle_time(batch_config):
    from xt_magic.core.compute import get_backend
    server = batch_config["server"]
    batch_config["write"](**{"pool-keep-alive": 0.01})   # 0.6 s
    job = submit("x = 1")
    (pool_id,) = server.pools
    job.wait(timeout=30, progress=False)
    backend = get_backend(get_session(), "batch")
    assert backend.reap_idle_pools(spare=pool_id) == []     # the pool in use is spared
    deleted = wait_for(backend.reap_idle_pools, 15, "idle pool reaped")
    assert deleted == [pool_id] and not server.pools


def test_a_50_run_sweep_submit_and_each_poll_cost_at_most_3_batch_requests(batch_config):
    """Submit (pool, job, one task collection) and each Job.refresh (one task list) stay at <= 3
    Batch requests for 50 runs: per-run requests would make a sweep's polls cost O(runs)."""
    server = batch_config["server"]
    batch_config["write"](**{"max-runs": 10})
    before = len(server.received)
    job = submit("score = lr * 10", hp={"lr": list(range(50))}, outputs=["score"])
    sent = server.received[before:]
    assert len(sent) <= 3, [(r["method"], r["path"]) for r in sent]
    polls = []
    while not job.done:
        before = len(server.received)
        job.refresh()
        polls.append([(r["method"], r["path"].split("?")[0]) for r in server.received[before:]])
    assert polls and all(len(p) <= 3 for p in polls), max(polls, key=len)
    assert sorted(job.results()["score"].values()) == [i * 10 for i in range(50)]
