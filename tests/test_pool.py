"""PoolBackend against real sshd boxes on loopback, with the real runner and the file store."""
from __future__ import annotations

import os

import pytest
import yaml

import runner_helpers as rh
from remote_helpers import launches_for, wait_final
from xt_magic.core import session as session_mod
from xt_magic.core.compute import get_backend, ssh
from xt_magic.core.errors import TargetError

pytestmark = pytest.mark.sshd


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    ssh.close()


def configure(xt_home, servers, *, max_runs=2, trust=True, target_extra=None) -> dict:
    boxes = {f"b{i + 1}": s.box(**{"max-runs": max_runs}) for i, s in enumerate(servers)}
    config = {"boxes": boxes,
              "compute-targets": {"pool": {"service": "pool", "boxes": list(boxes),
                                           **(target_extra or {})}}}
    with open(os.environ["XT_USER_CONFIG"], "w") as fh:
        yaml.safe_dump(config, fh)
    if trust:
        for s in servers:
            s.trust(xt_home)
    return boxes


def backend():
    return get_backend(session_mod.get_session(), "pool")


def state_of(be, run_id):
    return be._state(run_id)


def box_of(be, run_id):
    return be._placement(state_of(be, run_id))[0]


def pgid_of(be, run_id):
    return be._placement(state_of(be, run_id))[1]


def submit_one(xt_home, server, cell):
    """Configure one box, submit a one-run job; returns (backend, job id, run id)."""
    configure(xt_home, [server])
    be = backend()
    job, launches = launches_for(be.store, cell)
    be.submit(job, launches)
    return be, job, launches[0].run_id


def wait_states(be, job, runs, timeout=60):
    return {r: s["state"] for r, s in wait_final(be, job, runs, timeout).items()}


def test_job_runs_and_results_return(sshd_factory, xt_home):
    configure(xt_home, [sshd_factory()])
    be = backend()
    assert type(be).__name__ == "PoolBackend"
    job, launches = launches_for(be.store, "y = x * 2\nprint('hello from box')", inputs={"x": 21},
                                 outputs=["y"])
    be.submit(job, launches)
    assert box_of(be, launches[0].run_id) == "b1"
    states = wait_states(be, job, [launches[0].run_id])
    assert states == {launches[0].run_id: "completed"}
    assert isinstance(pgid_of(be, launches[0].run_id), int)  # from the runner's running event
    console = rh.read(be.store.root, launches[0].ticket["paths"]["console"]).decode()
    assert "hello from box" in console
    import cloudpickle
    assert cloudpickle.loads(rh.read(be.store.root, launches[0].ticket["paths"]["vars"]))["y"] == 42


def test_a_box_login_environment_is_allowlisted_too(sshd_factory, xt_home):
    """What the box's own login environment holds (a password, a token) never reaches the cell;
    the allowlisted knobs (threads, locale) do."""
    configure(xt_home, [sshd_factory(env={"BOX_DB_PASSWORD": "canary-box-pw",
                                          "HF_TOKEN": "canary-box-hf", "OMP_NUM_THREADS": "3"})])
    be = backend()
    job, launches = launches_for(be.store, "import os\nprint(sorted(os.environ.items()))")
    be.submit(job, launches)
    assert wait_states(be, job, [launches[0].run_id]) == {launches[0].run_id: "completed"}
    console = rh.read(be.store.root, launches[0].ticket["paths"]["console"]).decode()
    assert "('OMP_NUM_THREADS', '3')" in console
    assert "canary-box" not in console and "BOX_DB_PASSWORD" not in console


def test_sweep_across_two_boxes_respects_max_runs_with_queue(sshd_factory, xt_home):
    configure(xt_home, [sshd_factory(), sshd_factory()], max_runs=1)
    be = backend()
    job, launches = launches_for(be.store, "import time\ntime.sleep(0.5)\nout = lr",
                                 runs=4, hparams=[{"lr": i} for i in range(4)], outputs=["out"])
    runs = [la.run_id for la in launches]
    be.submit(job, launches)
    hosts = [box_of(be, r) for r in runs]
    assert sorted(hosts) == ["b1", "b1", "b2", "b2"]  # spread; each box's agent queues its share
    assert wait_states(be, job, runs) == {r: "completed" for r in runs}
    from test_pool_agent import most_at_once
    assert most_at_once(be.store.root, runs, "b1") == 1
    assert most_at_once(be.store.root, runs, "b2") == 1


def test_box_down_fails_its_runs_while_other_box_completes(sshd_factory, xt_home):
    one, two = sshd_factory(), sshd_factory()
    configure(xt_home, [one, two], max_runs=1)
    be = backend()
    job, launches = launches_for(be.store, "import time\ntime.sleep(3)", runs=2)
    runs = [la.run_id for la in launches]
    be.submit(job, launches)
    by_host = {box_of(be, r): r for r in runs}
    one.stop()
    ssh.close()
    states = wait_states(be, job, runs)
    assert states[by_host["b2"]] == "completed"
    lost = state_of(be, by_host["b1"])
    assert lost["state"] == "failed" and "box 'b1' lost" in lost["reason"]
    assert "unreachable" in lost["reason"]


def test_cancel_kills_remote_process_group(sshd_factory, xt_home, tmp_path):
    configure(xt_home, [sshd_factory()])
    be = backend()
    marker = tmp_path / "child.pid"
    cell = (f"import subprocess, time\np = subprocess.Popen(['sleep', '300'])\n"
            f"open({str(marker)!r}, 'w').write(str(p.pid))\ntime.sleep(300)")
    job, launches = launches_for(be.store, cell)
    run = launches[0].run_id
    be.submit(job, launches)
    rh.wait_for(lambda: marker.exists() and marker.read_text(), 30, "cell to start its child")
    child = int(marker.read_text())
    be.cancel(job, [run])
    assert state_of(be, run)["state"] == "cancelled"
    rh.wait_for(lambda: not _alive(child), 15, "the cell's child process to die")
    be.poll(job, [run])
    assert state_of(be, run)["state"] == "cancelled"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\nState:\tZ" not in fh.read()
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped between open and read
        return False


def test_remote_process_killed_mid_run_is_reconciled(sshd_factory, xt_home):
    be, job, run = submit_one(xt_home, sshd_factory(), "import time\ntime.sleep(300)")
    rh.wait_for(lambda: state_of(be, run)["state"] == "running", 30, "running")
    pgid = pgid_of(be, run)
    os.killpg(pgid, 9)  # SIGKILL the whole group: no exit file, nothing reported
    info = wait_states(be, job, [run])
    assert info[run] == "failed"
    assert state_of(be, run)["reason"] == "killed by SIGKILL"  # the box agent reaped it


def test_runner_exit_without_report_is_reconciled(sshd_factory, xt_home):
    be, job, run = submit_one(xt_home, sshd_factory(), "import os\nos._exit(7)")
    wait_states(be, job, [run])
    info = state_of(be, run)
    assert info["state"] == "failed" and info["exit_code"] == 7
    assert "exited with code 7" in info["reason"]


def test_sshd_killed_mid_run_then_poll_from_fresh_backend(sshd_factory, xt_home):
    """Disconnect mid-run: the box's sshd dies; a new backend (kernel restart) reconciles."""
    server = sshd_factory()
    be, job, run = submit_one(xt_home, server, "import time\ntime.sleep(300)")
    rh.wait_for(lambda: state_of(be, run)["state"] == "running", 30, "running")
    pgid = pgid_of(be, run)
    server.stop()
    session_mod.reset_session()
    ssh.close()
    fresh = backend()
    assert fresh is not be
    fresh.poll(job, [run])
    info = state_of(fresh, run)
    assert info["state"] == "failed" and "lost" in info["reason"]
    os.killpg(pgid, 9)


def test_unknown_host_fails_submit_with_trust_hint(sshd_factory, xt_home):
    configure(xt_home, [sshd_factory()], trust=False)
    be = backend()
    job, launches = launches_for(be.store, "pass")
    with pytest.raises(TargetError, match="unknown host.*--trust b1"):
        be.submit(job, launches)


def test_box_that_cannot_see_file_store_is_refused(sshd_factory, xt_home):
    configure(xt_home, [sshd_factory()])
    be = backend()
    job, launches = launches_for(be.store, "pass")
    launches[0].launch_secret = dict(launches[0].launch_secret,
                                     access={"kind": "file", "root": "/nonexistent/store"})
    be.submit(job, launches)
    info = state_of(be, launches[0].run_id)
    assert info["state"] == "failed" and "cannot see the file store" in info["reason"]


def test_list_boxes_and_trust(sshd_factory, xt_home):
    server = sshd_factory()
    configure(xt_home, [server], trust=False)
    with open(os.environ["XT_USER_CONFIG"]) as fh:
        cfg = yaml.safe_load(fh)
    cfg["boxes"]["down"] = {"address": "root@127.0.0.1:1"}
    with open(os.environ["XT_USER_CONFIG"], "w") as fh:
        yaml.safe_dump(cfg, fh)
    from xt_magic.core import api
    rows = {r["box"]: r for r in api.boxes()}
    assert rows["b1"]["reachable"] is False and "--trust b1" in rows["b1"]["error"]
    shown = api.boxes(trust="b1")
    assert shown[0]["fingerprint"].startswith("SHA256:") and "fingerprint" in str(shown)
    rows = {r["box"]: r for r in api.boxes()}
    assert rows["b1"]["reachable"] is True and rows["b1"]["cores"] == os.cpu_count()
    assert rows["b1"]["gpus"] == 0 and rows["b1"]["running"] == 0
    assert rows["down"]["reachable"] is False
    assert "<table>" in api.boxes()._repr_html_()


def test_magic_sweep_on_two_boxes_end_to_end(ip, sshd_factory, xt_home):
    """%%xt_run through the real client: packaging, pool, runner, results."""
    configure(xt_home, [sshd_factory(), sshd_factory()], max_runs=1)
    ip.run_cell("base = 100")
    res = ip.run_cell_magic("xt_run", "--target pool --hp lr=[1,2,3] --outputs y --wait",
                            "import socket\ny = base + lr\nprint('box says', y)\n")
    assert sorted(r.state for r in res) == ["completed"] * 3
    assert sorted(res["y"].values()) == [101, 102, 103]
    be = backend()
    assert {box_of(be, r.run) for r in res} == {"b1", "b2"}
    import io
    from xt_magic.core import api
    buf = io.StringIO()
    api.logs(res.runs_list[0].run, out=buf)
    assert "box says 10" in buf.getvalue()


@pytest.mark.azurite
def test_pool_with_blob_store_uploads_runner_and_ticket(sshd, xt_home, azurite, azurite_container,
                                                        ip):
    """Blob store: the box gets the ticket over SFTP (and the kernel's runner.py once, in its
    bin/) and reaches the store only through the SAS URLs of the launch secret (a 0600
    launch.json the runner deletes once read)."""
    configure(xt_home, [sshd])
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n" + azurite.store_entry(azurite_container) +
                 "xt-services: {storage: teamstore}\n")
    res = ip.run_cell_magic("xt_run", "--target pool --outputs y --wait", "y = 6 * 7\n")
    assert res.runs_list[0].state == "completed", (res.runs_list[0].reason, res.errors)
    assert res["y"] == 42
    remote = os.path.join(sshd.dir, "work", "runs", "run1.1")
    ticket = open(os.path.join(remote, "ticket.json")).read()
    assert "sig=" not in ticket and "http" not in ticket  # no URL in the ticket
    assert azurite.key not in ticket and "AccountKey" not in ticket
    from xt_magic.core.compute.staging import runner_source
    data, sha = runner_source()
    with open(os.path.join(sshd.dir, "work", "bin", sha[:32], "runner.py"), "rb") as fh:
        assert fh.read() == data
    assert not os.path.exists(os.path.join(remote, "launch.json"))  # read, then deleted
    assert "XT_LAUNCH" not in open(os.path.join(remote, "runner.log")).read()


def test_a_runner_changed_in_the_store_is_not_what_a_box_runs(sshd, xt_home, monkeypatch,
                                                              tmp_path):
    """The box sees the file store, whose bundle runner.py anyone with write access to the store
    could change: the box runs the kernel's own runner from its bin/, never that one."""
    configure(xt_home, [sshd])
    canary = tmp_path / "pwned"
    from xt_magic.core.storage.file import FileStore
    write = FileStore.write_bytes

    def tampered(self, path, data):  # the store's copy, as an attacker leaves it
        if path.endswith("/bundle/runner.py"):
            data = f"open({str(canary)!r}, 'w').write('x')\n".encode()
        return write(self, path, data)
    monkeypatch.setattr(FileStore, "write_bytes", tampered)
    from xt_magic.core import api
    job = api.run_cell("y = 6 * 7\n", {"__name__": "__main__"}, target="pool", outputs=["y"])
    try:
        job.wait(timeout=60, progress=False)
    finally:
        assert not canary.exists()
    assert job.results()["y"] == 42


def test_xt_boxes_magic_trust_then_list(ip, sshd, xt_home):
    configure(xt_home, [sshd], trust=False)
    shown = ip.run_line_magic("xt_boxes", "--trust b1")
    assert shown[0]["box"] == "b1" and shown[0]["fingerprint"].startswith("SHA256:")
    listed = {r["box"]: r for r in ip.run_line_magic("xt_boxes", "")}
    assert listed["b1"]["reachable"] is True and listed["b1"]["running"] == 0


def test_reused_pid_is_not_taken_for_the_run(tmp_path):
    """A pid file whose PID now belongs to another process: the run is gone, and cancel does
    not kill that process."""
    import json
    import subprocess
    import sys
    from xt_magic.core.compute import local_supervisor
    from xt_magic.core.compute.pool import status_script
    other = subprocess.Popen(["sleep", "60"], cwd="/", start_new_session=True)
    try:
        work = tmp_path / "work"
        run = work / "runs" / "run1.1"
        run.mkdir(parents=True)
        for pid_file in (f"{other.pid}", f"{other.pid} 12345"):  # no start time / another one
            (run / "pid").write_text(pid_file)
            out = subprocess.run(["sh", "-c", status_script(str(work), ["run1.1"])],
                                 capture_output=True, text=True).stdout
            assert "run1.1 gone" in out and "live 0" in out
        jobdir = work / "jobs" / "t1"
        jobdir.mkdir(parents=True)
        (jobdir / "job.json").write_text(json.dumps({
            "launches": [], "runner": rh.RUNNER, "runs_dir": str(work / "runs")}))
        subprocess.run([sys.executable, local_supervisor.__file__, "--cancel", str(jobdir),
                        "run1.1"], check=True)
        assert (run / "cancel").exists() and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_max_seconds_is_failed_with_time_limit(sshd_factory, xt_home, tmp_path):
    configure(xt_home, [sshd_factory()])
    be = backend()
    job, launches = launches_for(be.store, "import time\ntime.sleep(300)", max_seconds=2)
    run = launches[0].run_id
    be.submit(job, launches)
    info = wait_final(be, job, [run], timeout=60)[run]
    assert info["state"] == "failed" and "time limit" in info["reason"], info


def test_two_pollers_never_start_a_waiting_run_twice(sshd_factory, xt_home):
    """Two kernels poll the same job: each waiting run is started exactly once."""
    configure(xt_home, [sshd_factory()], max_runs=1)
    be = backend()
    job, launches = launches_for(be.store, "import time\ntime.sleep(0.3)", runs=3)
    runs = [la.run_id for la in launches]
    be.submit(job, launches)
    session_mod.reset_session()
    other = backend()
    assert other is not be

    import threading

    def done():
        threads = [threading.Thread(target=b.poll, args=(job, runs)) for b in (be, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return all(state_of(be, r)["state"] in ("completed", "failed") for r in runs)
    rh.wait_for(done, 60, "runs to finish")
    for r in runs:
        events = rh.events(be.store.root, {"paths": {"events": f"ws1/runs/{r}/events.jsonl"}})
        assert len([e for e in events if e.get("backend_id")]) == 1, events
        assert state_of(be, r)["state"] == "completed"
