"""The node-side runner (xt_magic/runner/runner.py), driven with hand-built tickets and bundles."""
from __future__ import annotations

import hashlib
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import pytest

from runner_helpers import (LAUNCHES, RUNNER, events, launch_env, make_job, read, state,
                            wait_for, zip_bytes)


def run_ticket(ticket_path, python=sys.executable, timeout=120, env=None):
    return subprocess.run([python, RUNNER, ticket_path], capture_output=True, text=True,
                          timeout=timeout, env=env or launch_env(ticket_path))


SUCCESS_CELL = """\
import os, subprocess, sys, xt_magic
print("hello", a, lr, square(3))
print("to stderr", file=sys.stderr)
subprocess.run(["echo", "from-child"])
for s in range(3):
    xt_magic.log(step=s, loss=1.0 / (s + 1))
xt_magic.log_hparams(layers=2)
sub = os.path.join(os.environ["XT_OUTPUT_DIR"], "sub")
os.makedirs(sub)
with open(os.path.join(sub, "f.txt"), "w") as f:
    f.write("hi")
res = {"double": a * 2, "fn": square}
"""


def test_success_outputs_console_metrics_files(tmp_path):
    import cloudpickle

    def square(x):  # a local function travels by value, like a notebook function
        return x * x
    root = tmp_path / "store"
    [(run, tp, t)] = make_job(root, SUCCESS_CELL, inputs={"a": 21, "square": square},
                              outputs=["res"], hparams={"lr": 0.1})
    p = run_ticket(tp)
    assert p.returncode == 0, p.stderr
    evs = events(root, t)
    assert [e["state"] for e in evs] == ["created", "running", "completed"]
    running, done = evs[1], evs[2]
    assert running["pid"] > 0 and running["host"] and "pstart" in running
    console = read(root, t["paths"]["console"]).decode()
    for text in ("hello 21 0.1 9", "to stderr", "from-child"):
        assert text in console
    recs = [json.loads(line) for line in read(root, t["paths"]["metrics"]).splitlines()]
    assert {"kind": "hparams", "values": {"lr": 0.1}}.items() <= recs[0].items()
    steps = [(r["step"], r["values"]["loss"]) for r in recs if r["kind"] == "metrics"]
    assert steps == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    assert any(r["kind"] == "hparams" and r["values"] == {"layers": 2} for r in recs)
    raw = read(root, t["paths"]["vars"])
    assert hashlib.sha256(raw).hexdigest() == done["vars_sha256"]
    res = cloudpickle.loads(raw)["res"]
    assert res["double"] == 42 and res["fn"](4) == 16
    files = read(root, t["paths"]["files"])
    assert hashlib.sha256(files).hexdigest() == done["files_sha256"]
    with zipfile.ZipFile(BytesIO(files)) as zf:
        assert zf.read("sub/f.txt") == b"hi"


def test_exception_reports_type_message_and_cell_traceback(tmp_path):
    root = tmp_path / "store"
    cell = "x = 1\n\ndef boom(v):\n    raise ValueError(f'bad value {v}')\n\nboom(x + 1)\n"
    [(run, tp, t)] = make_job(root, cell)
    p = run_ticket(tp)
    assert p.returncode == 1
    info = state(root, t)
    assert info["state"] == "failed" and info["exit_code"] == 1
    err = info["error"]
    assert err["type"] == "ValueError" and err["message"] == "bad value 2"
    tb = err["traceback"]
    assert "raise ValueError(f'bad value {v}')" in tb and "boom(x + 1)" in tb
    assert 'line 4, in boom' in tb and "runner.py" not in tb
    assert "ValueError: bad value 2" in read(root, t["paths"]["console"]).decode()


def test_missing_output_variable_fails(tmp_path):
    root = tmp_path / "store"
    [(run, tp, t)] = make_job(root, "y = 1\n", outputs=["nope"])
    assert run_ticket(tp).returncode == 1
    info = state(root, t)
    assert info["state"] == "failed" and "nope" in info["error"]["message"]


class _Bomb:
    """Unpickling this creates a marker file: proves whether the runner unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_inputs_hash_checked_before_unpickling(tmp_path):
    import pickle
    root = tmp_path / "store"
    marker = tmp_path / "unpickled"
    [(run, tp, t)] = make_job(root, "print(a)\n", inputs={"a": 1})
    # a store writer swaps the inputs: the signed ticket's sha256 no longer matches
    (root / t["bundle"]["inputs"]).write_bytes(pickle.dumps({"a": _Bomb(str(marker))}))
    assert run_ticket(tp).returncode == 1
    info = state(root, t)
    assert info["state"] == "failed" and "sha256" in info["error"]["message"]
    assert not marker.exists()


def test_ticket_signature_checked_before_anything(tmp_path):
    """A store writer who also rewrites the ticket (its inputs sha256 now matching the planted
    pickle) is refused: the ticket's sig was made with the job key, which the store never holds."""
    import pickle
    root = tmp_path / "store"
    marker = tmp_path / "unpickled"
    [(run, tp, t)] = make_job(root, "print(a)\n", inputs={"a": 1})
    bomb = pickle.dumps({"a": _Bomb(str(marker))})
    (root / t["bundle"]["inputs"]).write_bytes(bomb)
    t["bundle"]["inputs_sha256"] = hashlib.sha256(bomb).hexdigest()
    with open(tp, "w") as fh:
        json.dump(t, fh)  # the old sig stays: the attacker cannot make a new one
    assert run_ticket(tp).returncode == 1
    info = state(root, t)
    assert info["state"] == "failed" and info["reason"] == "ticket signature does not verify"
    assert not marker.exists()


def test_launch_secret_never_reaches_the_cell_and_results_are_signed(tmp_path):
    from xt_magic.runner.runner import verify_fields
    from runner_helpers import job_key, secret
    KEY = job_key(tmp_path / "store")
    root = tmp_path / "store"
    cell = ("import os, subprocess\n"
            "seen = sorted(k for k in os.environ if k.startswith('XT_LAUNCH'))\n"
            "child = subprocess.run(['env'], capture_output=True, text=True).stdout\n"
            "print(child)\n"
            "out = (seen, 'XT_LAUNCH' in child)\n")
    [(run, tp, t)] = make_job(root, cell, outputs=["out"])
    launch_file = tmp_path / "launch.json"
    launch_file.write_text(json.dumps(secret(tp)))
    os.chmod(launch_file, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XT_LAUNCH")}
    env["XT_LAUNCH_FILE"] = str(launch_file)
    p = run_ticket(tp, env=env)
    assert p.returncode == 0, p.stderr
    assert not launch_file.exists()  # the runner deleted it once read
    import cloudpickle
    assert cloudpickle.loads(read(root, t["paths"]["vars"]))["out"] == ([], False)
    for key in ("console", "events", "metrics"):
        assert KEY.hex().encode() not in read(root, t["paths"][key])
    done = events(root, t)[-1]
    assert done["state"] == "completed" and done["job"] == "job1" and done["run"] == run
    assert done["vars_sha256"] == hashlib.sha256(read(root, t["paths"]["vars"])).hexdigest()
    assert done["vars_size"] == len(read(root, t["paths"]["vars"]))  # signed like the sha256
    assert verify_fields(KEY, done)
    assert not verify_fields(KEY, dict(done, vars_size=1))
    assert not verify_fields(KEY, dict(done, vars_sha256="0" * 64))


def test_no_launch_secret_exits_unreported(tmp_path):
    root = tmp_path / "store"
    [(run, tp, t)] = make_job(root, "x = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XT_LAUNCH")}
    p = run_ticket(tp, env=env)
    assert p.returncode == 2 and "no launch secret" in p.stderr
    assert state(root, t)["state"] == "created"


def test_snapshot_code_importable_and_unsafe_snapshot_refused(tmp_path):
    root = tmp_path / "store"
    [(run, tp, t)] = make_job(root, "import mylib\nprint(mylib.VALUE)\n",
                              snapshot={"mylib/__init__.py": "VALUE = 'from-snapshot'\n"})
    assert run_ticket(tp).returncode == 0
    assert "from-snapshot" in read(root, t["paths"]["console"]).decode()

    outside = tmp_path / "evil.txt"
    for entry in ("../../evil.txt", str(outside)):
        root2 = tmp_path / f"store{abs(hash(entry))}"
        [(run, tp, t)] = make_job(root2, "print(1)\n", snapshot={entry: "x"})
        assert run_ticket(tp).returncode == 1
        assert "unsafe path" in state(root2, t)["error"]["message"]
    assert not outside.exists()
    # a symlink entry
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    root3 = tmp_path / "store3"
    [(run, tp, t)] = make_job(root3, "print(1)\n", snapshot=buf.getvalue())
    assert run_ticket(tp).returncode == 1
    assert "unsafe path 'link'" in state(root3, t)["error"]["message"]


def test_standin_xt_magic_on_node_without_it(tmp_path):
    base = getattr(sys, "_base_executable", None)
    # a node has no PYTHONPATH pointing at this checkout (the test command may set one)
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ok = bool(base) and subprocess.run([base, "-c", "import xt_magic"], env=bare,
                                       capture_output=True).returncode != 0
    from conftest import need
    need(ok, "an interpreter without xt_magic installed (run the tests from a venv)")
    root = tmp_path / "store"
    cell = "import xt_magic\nassert xt_magic.__xt_standin__\nxt_magic.log(step=1, acc=0.5)\nr = 7\n"
    [(run, tp, t)] = make_job(root, cell, outputs=["r"], inputs={"v": [1, 2]})
    env = {k: v for k, v in launch_env(tp).items() if k != "PYTHONPATH"}
    p = run_ticket(tp, python=base, env=env)
    assert p.returncode == 0, read(root, t["paths"]["console"])
    recs = [json.loads(line) for line in read(root, t["paths"]["metrics"]).splitlines()]
    assert recs[-1]["values"] == {"acc": 0.5} and recs[-1]["step"] == 1


def test_log_outside_a_job_warns_and_does_nothing():
    import xt_magic
    from xt_magic.core.jobs import metrics_log
    metrics_log._warned = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xt_magic.log(step=1, loss=0.1)
        xt_magic.log_hparams(lr=0.1)
    assert len(caught) == 1 and "outside an xt_magic job" in str(caught[0].message)
    assert not metrics_log.in_job()


def test_sigterm_writes_no_final_event(tmp_path):
    root = tmp_path / "store"
    [(run, tp, t)] = make_job(root, "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, RUNNER, tp], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=launch_env(tp))
    wait_for(lambda: b"started" in read(root, t["paths"]["console"]), what="cell start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    assert state(root, t)["state"] == "running"  # the canceller writes "cancelled", not the runner


# ------------------------------------------------------------------------------ setup envs
def build_wheel(folder, name="tinypkg_xt", version="0.1", value="tiny-ok"):
    """A minimal pure-python wheel, built by hand so pip needs no network or build backend."""
    dist = f"{name}-{version}"
    files = {f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                           f"Version: {version}\n".encode(),
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                        b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = os.path.join(folder, f"{dist}-py3-none-any.whl")
    with open(path, "wb") as fh:
        fh.write(zip_bytes(files))
    return path


def test_setup_env_built_once_reused_and_failed_build_not_cached(tmp_path, xt_home):
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    wheel = os.path.join(wheel_dir, "tinypkg_xt-0.1-py3-none-any.whl")
    setup = {"name": "tiny", "hash": "h" + "1" * 16, "pip-packages": [wheel],
             "activate": "export XT_TEST_ACT=activated", "conda-packages": []}
    cell = ("import os, tinypkg_xt, yaml\n"
            "print('pkg', tinypkg_xt.VALUE, os.environ['XT_TEST_ACT'], sys_prefix())\n")
    cell = "import sys\ndef sys_prefix():\n    return sys.prefix\n" + cell
    env_dir = xt_home / "envs" / setup["hash"]

    # 1) the wheel does not exist yet: pip fails, the run fails with pip's output, nothing cached
    root = tmp_path / "s1"
    [(run, tp, t)] = make_job(root, cell, setup=setup)
    assert run_ticket(tp, timeout=300).returncode == 1
    info = state(root, t)
    assert info["state"] == "failed" and "pip install" in info["reason"]
    console = read(root, t["paths"]["console"]).decode()
    assert "building environment" in console and "tinypkg_xt-0.1-py3-none-any.whl" in console
    assert not env_dir.exists()

    # 2) same setup hash once the wheel exists: built now, used by the run
    build_wheel(wheel_dir)
    root = tmp_path / "s2"
    [(run, tp, t)] = make_job(root, cell, setup=setup)
    assert run_ticket(tp, timeout=300).returncode == 0, read(root, t["paths"]["console"])
    console = read(root, t["paths"]["console"]).decode()
    assert "building environment" in console
    assert f"pkg tiny-ok activated {env_dir}" in console
    ready = env_dir / ".xt-ready"
    stamp = ready.stat().st_mtime_ns

    # 3) reused: no rebuild
    root = tmp_path / "s3"
    [(run, tp, t)] = make_job(root, cell, setup=setup)
    assert run_ticket(tp, timeout=300).returncode == 0
    console = read(root, t["paths"]["console"]).decode()
    assert "building environment" not in console and "pkg tiny-ok activated" in console
    assert ready.stat().st_mtime_ns == stamp


def test_conda_packages_without_conda_is_a_clear_error(tmp_path, xt_home, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no conda here
    root = tmp_path / "store"
    setup = {"name": "c", "hash": "c" * 16, "conda-packages": ["numpy"], "pip-packages": []}
    [(run, tp, t)] = make_job(root, "print(1)\n", setup=setup)
    assert run_ticket(tp).returncode == 1
    assert "conda is not installed" in state(root, t)["reason"]
    assert not (xt_home / "envs" / setup["hash"]).exists()


def test_failing_activate_fails_run(tmp_path):
    root = tmp_path / "store"
    setup = {"name": "a", "hash": "a" * 16, "activate": "echo act-out; false"}
    [(run, tp, t)] = make_job(root, "print(1)\n", setup=setup)
    assert run_ticket(tp).returncode == 1
    assert "activate failed" in state(root, t)["reason"]
    assert "act-out" in read(root, t["paths"]["console"]).decode()


# ------------------------------------------------------------------------------ urls io
class _BlobHandler(BaseHTTPRequestHandler):
    """Just enough of the blob REST API: GET, PUT BlockBlob/AppendBlob, appendblock."""

    blobs: dict = {}
    log: list = []

    def log_message(self, *args):
        pass

    def _reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        self.log.append(("GET", path, query))
        if "sig=SECRET" not in query:
            return self._reply(403)
        if path not in self.blobs:
            return self._reply(404)
        self._reply(200, bytes(self.blobs[path][1]))

    def do_PUT(self):
        path, _, query = self.path.partition("?")
        self.log.append(("PUT", path, query))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "sig=SECRET" not in query or not self.headers.get("x-ms-version"):
            return self._reply(403)
        if "comp=appendblock" in query:
            if path not in self.blobs or self.blobs[path][0] != "append":
                return self._reply(404)
            self.blobs[path][1].extend(body)
            return self._reply(201)
        kind = self.headers.get("x-ms-blob-type")
        if kind == "AppendBlob":
            if self.headers.get("If-None-Match") == "*" and path in self.blobs:
                return self._reply(409)
            self.blobs[path] = ("append", bytearray())
        elif kind == "BlockBlob":
            self.blobs[path] = ("block", bytearray(body))
        else:
            return self._reply(400)
        self._reply(201)


@pytest.fixture
def blob_server():
    handler = type("H", (_BlobHandler,), {"blobs": {}, "log": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()


def _serve_from(handler, root, t, tp, server):
    """Upload the store dir to the blob server and rewrite the ticket to per-path SAS URLs."""
    base = f"http://127.0.0.1:{server.server_address[1]}/c/"
    for dirpath, _, files in os.walk(root):
        for f in files:
            full = os.path.join(dirpath, f)
            sp = os.path.relpath(full, root).replace(os.sep, "/")
            kind = "append" if sp.endswith(".jsonl") else "block"
            handler.blobs["/c/" + sp] = (kind, bytearray(open(full, "rb").read()))
    urls = {sp: base + sp + "?sv=2021&sig=SECRET"
            for sp in list(t["paths"].values()) + [v for k, v in t["bundle"].items()
                                                   if v and not k.endswith("sha256")]}
    LAUNCHES[str(tp)]["access"] = {"kind": "urls", "urls": urls}  # the launch carries the URLs


def test_urls_io_round_trip_and_no_sas_leak(tmp_path, blob_server):
    import cloudpickle
    server, handler = blob_server
    root = tmp_path / "store"
    cell = "import xt_magic\nprint('via-urls', a)\nxt_magic.log(step=0, m=1)\nout = a + 1\n"
    [(run, tp, t)] = make_job(root, cell, inputs={"a": 1}, outputs=["out"])
    _serve_from(handler, root, t, tp, server)
    p = run_ticket(tp)
    assert p.returncode == 0, p.stderr
    blob = lambda sp: bytes(handler.blobs["/c/" + sp][1])  # noqa: E731
    from xt_magic.core.protocol.events import fold, parse as parse_events
    info = fold(parse_events(blob(t["paths"]["events"])))
    assert info["state"] == "completed"
    assert "via-urls 1" in blob(t["paths"]["console"]).decode()
    assert b'"m": 1' in blob(t["paths"]["metrics"])
    assert cloudpickle.loads(blob(t["paths"]["vars"])) == {"out": 2}
    appends = [q for m, p_, q in handler.log if "appendblock" in q]
    assert appends, "appends use appendblock"
    for sp in t["paths"].values():
        if ("/c/" + sp) in handler.blobs:
            assert b"SECRET" not in blob(sp)
    assert "SECRET" not in p.stdout + p.stderr


def test_over_urls_a_first_attempt_asks_for_no_checkpoint_and_a_rerun_resumes(
        tmp_path, blob_server, xt_home):
    """Over per-blob URLs a run first reads its own events: a first attempt makes no request
    for checkpoints it cannot have, and the same run started again (a requeue) resumes from
    the one the first attempt kept. The job's objects come from the node's cache after the
    first attempt, checked against the ticket's sha256 each time: a changed copy is fetched
    again."""
    import cloudpickle
    server, handler = blob_server
    root = tmp_path / "store"
    own = {name: f"ws1/runs/run1.1/checkpoints/{name}"
           for name in ("dict_cp.json", "file.dat", "native.pkl")}
    cell = ("import xt_magic\nstate = xt_magic.restore({'n': 0})\nstate['n'] += 1\n"
            "xt_magic.checkpoint(state)\nn = state['n']\n")
    [(run, tp, t)] = make_job(root, cell, outputs=["n"],
                              extra={"checkpoint": {"write": own, "read": own}})
    _serve_from(handler, root, t, tp, server)
    base = f"http://127.0.0.1:{server.server_address[1]}/c/"
    LAUNCHES[str(tp)]["access"]["urls"].update(
        {p: base + p + "?sv=2021&sig=SECRET" for p in own.values()})

    def attempt():
        start = len(handler.log)
        p = run_ticket(tp)
        assert p.returncode == 0, p.stderr
        asked = [(m, path[len("/c/"):]) for m, path, q in handler.log[start:]]
        return cloudpickle.loads(bytes(handler.blobs["/c/" + t["paths"]["vars"]][1]))["n"], asked

    n, asked = attempt()
    assert n == 1
    assert not [a for a in asked if "checkpoints/" in a[1] and a[0] == "GET"], asked
    assert asked[0] == ("GET", t["paths"]["events"])  # before its own "running" event
    assert ("GET", t["bundle"]["cell"]) in asked

    n, asked = attempt()  # the same run again, as a requeue starts it
    assert n == 2
    assert ("GET", own["native.pkl"]) in asked
    assert ("GET", t["bundle"]["cell"]) not in asked  # this node keeps the job's objects

    cached = os.path.join(xt_home, "objects", t["bundle"]["cell_sha256"])
    assert oct(os.stat(cached).st_mode & 0o777) == "0o600"
    with open(cached, "w") as fh:
        fh.write("n = 'not the cell the job was submitted with'\n")
    n, asked = attempt()
    assert n == 3 and ("GET", t["bundle"]["cell"]) in asked
    assert open(cached).read() == cell


def test_no_env_value_or_secret_written(tmp_path, monkeypatch):
    monkeypatch.setenv("XT_CANARY_SECRET", "canary-9f3e1d")
    root = tmp_path / "store"
    cell = ("import os\nassert os.environ['MY_TOKEN'] == 'tok-77ab'\n"
            "raise RuntimeError('failing on purpose')\n")
    [(run, tp, t)] = make_job(root, cell, env={"MY_TOKEN": "tok-77ab"})
    assert run_ticket(tp).returncode == 1
    assert state(root, t)["error"]["message"] == "failing on purpose"
    for key in ("events", "console", "metrics"):
        data = read(root, t["paths"][key])
        assert b"canary-9f3e1d" not in data and b"tok-77ab" not in data


def test_concurrent_runs_build_a_setup_env_once(tmp_path, xt_home):
    wheel = build_wheel(str(tmp_path))
    setup = {"name": "tiny", "hash": "p" * 16, "pip-packages": [wheel]}
    root = tmp_path / "store"
    runs = make_job(root, "import tinypkg_xt\nprint('got', tinypkg_xt.VALUE)\n", runs=3,
                    setup=setup)
    procs = [subprocess.Popen([sys.executable, RUNNER, tp], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=launch_env(tp)) for _, tp, _ in runs]
    assert [p.wait(300) for p in procs] == [0, 0, 0]
    consoles = [read(root, t["paths"]["console"]).decode() for _, _, t in runs]
    assert all("got tiny-ok" in c for c in consoles)
    assert sum(c.count("building environment") for c in consoles) == 1


INCREMENTAL_CELL = """\
import os, time, xt_magic
print('first line', flush=True)
xt_magic.log(step=0, early=1.0)
deadline = time.time() + 60
while not os.path.exists(FLAG) and time.time() < deadline:
    time.sleep(0.05)
print('last line')
"""


@pytest.mark.parametrize("kind", ["file", "urls"])
def test_console_and_metrics_flushed_while_running(tmp_path, kind, blob_server):
    server, handler = blob_server
    root = tmp_path / "store"
    flag = tmp_path / "flag"
    [(run, tp, t)] = make_job(root, INCREMENTAL_CELL, inputs={"FLAG": str(flag)})
    if kind == "urls":
        _serve_from(handler, root, t, tp, server)
        get = lambda key: bytes(handler.blobs.get("/c/" + t["paths"][key], ("", b""))[1])  # noqa
    else:
        get = lambda key: read(root, t["paths"][key])  # noqa: E731
    proc = subprocess.Popen([sys.executable, RUNNER, tp], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=launch_env(tp))
    try:
        wait_for(lambda: b"first line" in get("console"), what="console while running")
        wait_for(lambda: b'"early": 1.0' in get("metrics"), what="metrics while running")
        assert b"last line" not in get("console") and proc.poll() is None
    finally:
        flag.write_text("go")
    assert proc.wait(60) == 0
    assert b"last line" in get("console")


def test_standin_script_job_records_from_every_process(tmp_path):
    """A command job on a node with neither xt_magic nor xtlib: the stand-ins the runner writes
    record metrics from the script and from its subprocess; no launch secret in their env."""
    base = getattr(sys, "_base_executable", None)
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ok = bool(base) and subprocess.run([base, "-c", "import xt_magic"], env=bare,
                                       capture_output=True).returncode != 0
    from conftest import need
    need(ok, "an interpreter without xt_magic installed (run the tests from a venv)")
    script = ("import os, subprocess, sys\nimport xt_magic\nfrom xtlib.run import Run\n"
              "assert xt_magic.__xt_standin__\nxt_magic.log(step=1, a=1)\n"
              "Run().log_metrics({'b': 2, 'step': 5}, step_name='step')\n"
              "subprocess.run([sys.executable, '-c', 'import xt_magic; xt_magic.log(step=2, c=3)'],"
              " check=True)\n"
              "assert not [k for k in os.environ if k.startswith('XT_LAUNCH')]\n"
              "print('args', sys.argv[1:])\nsys.exit(int(sys.argv[-1].split('=')[1]))\n")
    root = tmp_path / "store"
    commands = [{"argv": ["train.py", "--code=0"], "python": True}]
    [(run, tp, t)] = make_job(root, "", snapshot={"train.py": script},
                              extra={"kind": "command", "commands": commands})
    env = {k: v for k, v in launch_env(tp).items() if k != "PYTHONPATH"}
    p = run_ticket(tp, python=base, env=env)
    console = read(root, t["paths"]["console"]).decode()
    assert p.returncode == 0, console
    assert "args ['--code=0']" in console
    recs = [json.loads(line) for line in read(root, t["paths"]["metrics"]).splitlines()]
    got = {k: (r.get("step"), v) for r in recs if r["kind"] == "metrics"
           for k, v in r["values"].items()}
    assert got == {"a": (1, 1), "b": (5, 2), "step": (5, 5), "c": (2, 3)}

    # a failing command: the run fails with the command's exit code
    root2 = tmp_path / "store2"
    commands = [{"argv": ["train.py", "--code=6"], "python": True}]
    [(run, tp, t)] = make_job(root2, "", snapshot={"train.py": script},
                              extra={"kind": "command", "commands": commands})
    env = {k: v for k, v in launch_env(tp).items() if k != "PYTHONPATH"}
    assert run_ticket(tp, python=base, env=env).returncode == 1
    final = state(root2, t)
    assert final["state"] == "failed" and final["exit_code"] == 6
    assert "exited with code 6" in final["reason"]


def test_warm_answers_a_forked_runs_module_lookups():
    """runner.warm() (a supervisor, before it forks runs) looks up xt_magic and xtlib once, so a
    forked run's RunSpool and sinks search no sys.path for them; the answers are this python's."""
    import importlib.util
    from xt_magic.runner import runner
    runner._IMPORTABLE.clear()
    runner.warm()
    assert runner._IMPORTABLE == {name: importlib.util.find_spec(name) is not None
                                  for name in ("xtlib", "xt_magic")}


def test_warm_imports_only_what_the_tickets_runs_use():
    """A supervisor's template imports what its runs will use, not more (each import delays the
    first run): no glob (re, fnmatch) without after-dirs, no ast without cell outputs."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import runner, json\n"
              "runner.warm(json.loads(sys.argv[2]))\n"
              "print(json.dumps({m: m in sys.modules for m in ('glob', 'ast', 'cloudpickle')}))")

    def loaded(tickets):
        out = subprocess.run([sys.executable, "-S", "-c", script, os.path.dirname(RUNNER),
                              json.dumps(tickets)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    assert loaded([{"capture": None, "outputs": []}]) == {
        "glob": False, "ast": False, "cloudpickle": False}
    assert loaded([{"capture": {"max_bytes": 1}, "after": {"dirs": ["logs"]}}]) == {
        "glob": True, "ast": True, "cloudpickle": False}


def test_checkpoint_dir_and_spool_made_on_first_use(tmp_path):
    """A run that records and keeps nothing gets no spool file and no checkpoint folder (each
    was a file-system write every run paid); the first record or checkpoint makes them, and the
    run's work dir still goes when it ends."""
    cell = ("import os, _xt_spool\n"
            "ck, sp = os.environ['XT_CHECKPOINT_DIR'], os.environ['XT_METRICS_SPOOL']\n"
            "before = (os.path.isdir(ck), os.path.exists(sp))\n"
            "_xt_spool.save('file.dat', b'data')\n"
            "after = (os.path.isfile(os.path.join(ck, 'file.dat')), os.path.exists(sp))\n"
            "work = os.getcwd()\n")
    root = tmp_path / "store"
    [(run, tp, t)] = make_job(root, cell, outputs=["before", "after", "work"])
    p = run_ticket(tp)
    assert p.returncode == 0, p.stderr
    import cloudpickle
    got = cloudpickle.loads(read(root, t["paths"]["vars"]))
    assert got["before"] == (False, False) and got["after"] == (True, True)
    assert not os.path.exists(got["work"])
    done = events(root, t)[-1]
    assert done["state"] == "completed"
