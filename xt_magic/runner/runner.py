#!/usr/bin/env python3
"""xt_magic runner: runs one cell job on a node.  Usage: ``python runner.py TICKET.json``.

Standard library only (Python >= 3.10). The ticket format is in docs/architecture.md ("Runner
ticket"). Phases:

1. setup: realise the ticket's setup (a venv per setup hash under ``$XT_HOME/envs/``, built once
   under a lock; a failed build is removed), run ``activate`` in bash, then re-exec this file with
   the environment's python (``--phase2``).
2. run: append ``running``, fetch the bundle (sha256 checked before any unpickling), unpack the
   snapshot safely, load inputs, set hparams as variables, exec the cell with stdout/stderr teed to
   the run's console, buffer metrics, write outputs and ``completed`` — or ``failed`` with the
   exception's type, message and traceback.

Exit codes: 0 completed, 1 failed (and reported), 2 failed without being able to report, 3 the
same because the disk is full (ENOSPC: its supervisor names the cause), 143 cancelled by SIGTERM
(nothing reported: the canceller writes ``cancelled``).
Startup is kept cheap: modules not needed by a trivial job are imported where they are used.
Nothing here prints or writes environment values, URLs (they carry SAS tokens) or other secrets.
"""
import json
import os
import sys
import time

APPEND_API_VERSION = "2021-08-06"   # x-ms-version the blob service (and Azurite) accept
APPEND_BLOCK_MAX = 4 * 1024 * 1024
FLUSH_SECONDS = 1.0                 # console (urls) and metrics flush period
SINK_MODULE = "_xt_runner_sink"     # what xt_magic.log() looks for (core/jobs/metrics_log.py)
CELL_FILENAME = "<xt_run cell>"
EXIT_OK, EXIT_FAILED, EXIT_UNREPORTED, EXIT_NO_SPACE, EXIT_CANCELLED = 0, 1, 2, 3, 143
# `python runner.py T` compiles this file on every start (a script is never cached); importing it
# as a module uses __pycache__: `python -c BOOTSTRAP RUNNER_DIR T` does the same, 10-30 ms sooner.
BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); import runner; "
             "sys.exit(runner.main(sys.argv[1:]))")


#: how a node without a warm supervisor starts ``runner.py`` (Batch, Slurm):
#: ``python -c NODE_BOOTSTRAP SHA256 RUNNER_FILE TICKET...``. It refuses a runner.py whose sha256
#: is not the one in its command line (which the kernel set, not the store), and imports it from
#: a copy under ``$XT_HOME/runner/<sha>/``: a script is compiled at every start (~15 ms for this
#: one), a module once per node. The first tasks on a node start together: one of them writes
#: and compiles the copy under a lock while the others wait for it, so a node compiles it once
#: (the bytecode is written before the copy appears under its name, and the rename keeps the
#: mtime the bytecode records).
NODE_BOOTSTRAP = (
    "import hashlib,os,sys\n"
    "h,r=sys.argv[1],sys.argv[2]\n"
    "s=open(r,'rb').read()\n"
    "if hashlib.sha256(s).hexdigest()!=h:sys.exit('xt: '+r+' is not the runner this job was "
    "submitted with (sha256 mismatch): not running it')\n"
    "d=os.path.join(os.environ.get('XT_HOME') or os.path.expanduser('~/.xt'),'runner',h[:32])\n"
    "f=os.path.join(d,'runner.py')\n"
    "def same():\n"
    " try:return open(f,'rb').read()==s\n"
    " except OSError:return False\n"
    "if not same():\n"
    " import fcntl,importlib.util,py_compile\n"
    " os.makedirs(d,exist_ok=True);l=os.open(f+'.lock',os.O_CREAT|os.O_WRONLY,0o600)\n"
    " fcntl.flock(l,fcntl.LOCK_EX)\n"
    " if not same():\n"
    "  t=f+'.%d'%os.getpid();open(t,'wb').write(s)\n"
    "  try:py_compile.compile(t,importlib.util.cache_from_source(f),f,True)\n"
    "  except Exception:pass\n"
    "  os.replace(t,f)\n"
    " os.close(l)\n"
    "sys.path.insert(0,d);import runner;sys.exit(runner.main([r]+sys.argv[3:]))")


def node_command(python, sha256, runner_file, *args):
    """argv running ``runner_file`` (whose sha256 the kernel knows) through ``NODE_BOOTSTRAP``."""
    return [python, "-c", NODE_BOOTSTRAP, sha256, runner_file, *args]


def command(python, ticket_path, *extra):
    """argv that starts this runner (through the bytecode cache) on ``ticket_path``."""
    return [python, "-c", BOOTSTRAP, os.path.dirname(os.path.abspath(__file__)), ticket_path,
            *extra]


class RunnerError(Exception):
    """A problem the runner reports as the run's failure (bad bundle, setup, I/O)."""


class Cancelled(BaseException):
    """Raised in the main thread on SIGTERM."""


def now_iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03d+00:00" % int(t % 1 * 1000)


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state is [0], pgrp [2], start time
    [19]); None when there is no such process. The one /proc reader of xt_magic."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_start(pid):
    """Start time of a process (clock ticks since boot) so a reused pid is not mistaken for it."""
    fields = proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def proc_alive(pid, pstart):
    """True if ``pid`` is the same process (start time) and not a zombie."""
    fields = proc_stat(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return False  # gone, or exited (PID 1 here may reap orphans late)
    return pstart is None or int(fields[19]) == int(pstart)


def xt_home():
    return os.environ.get("XT_HOME") or os.path.join(os.path.expanduser("~"), ".xt")


def write_atomic(path, data, mode=0o644, keep_existing=False):
    """Replace ``path`` with ``data`` (bytes or str) so readers see the old or the new file, never
    half; the file gets ``mode`` from the start (0600 for secrets). (The kernel uses this one too.)
    ``keep_existing``: an existing file keeps its mode and owner (a 0600 config stays 0600)."""
    import _thread  # builtin: no import cost (tempfile's would be paid by every supervisor)
    if isinstance(data, str):
        data = data.encode()
    st = None
    if keep_existing:
        try:
            st = os.stat(path)
            mode = st.st_mode & 0o7777
        except FileNotFoundError:
            pass
    # unique per process and thread, so concurrent writers never share a temporary file; the
    # ".tmp-" prefix keeps it out of store listings
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{name}.{os.getpid()}-{_thread.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            _write_all(fd, data)
            if st is not None:
                os.fchmod(fd, mode)  # the umask may have cut bits
                if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    try:
                        os.fchown(fd, st.st_uid, st.st_gid)
                    except PermissionError:
                        pass  # only root may give a file away; the mode is kept all the same
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------------ signing and the launch
# The stored ticket holds no URL and no key; the launch channel (env XT_LAUNCH, or a 0600 file
# named by XT_LAUNCH_FILE) carries {"key": hex job key, "access": node access}. The runner checks
# the ticket's sig with the key before trusting anything in it, and signs what it reports, so the
# kernel believes only results made by a holder of the key (docs/architecture.md "Signing").

def canonical(obj):
    """The bytes that are signed: sorted keys, no spaces (json round trips keep them stable)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sign_fields(key, fields):
    """HMAC-SHA256 (hex) of ``fields`` without its ``sig``."""
    import hashlib
    import hmac
    body = {k: v for k, v in fields.items() if k != "sig"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def verify_fields(key, fields):
    import hmac
    sig = fields.get("sig") if isinstance(fields, dict) else None
    return isinstance(sig, str) and hmac.compare_digest(sig, sign_fields(key, fields))


LAUNCH_ENV, LAUNCH_FILE_ENV = "XT_LAUNCH", "XT_LAUNCH_FILE"


def take_launch():
    """The launch secret, removed from the environment (and its file deleted) at once, so the
    cell, its subprocesses and the console never see it. None when there is none."""
    raw = os.environ.pop(LAUNCH_ENV, None)
    path = os.environ.pop(LAUNCH_FILE_ENV, None)
    if path:
        try:
            with open(path, "rb") as fh:
                raw = raw or fh.read().decode()
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
    if not raw:
        return None
    launch = json.loads(raw)
    launch["key"] = bytes.fromhex(launch["key"])
    return launch


# ---------------------------------------------------------------------- a run's environment
#: what a run's environment keeps (exact names, and prefixes ending in *): locale, paths,
#: proxies, CUDA/threading knobs, non-secret PYTHON*/PIP_*, virtualenv/conda, Slurm's and Batch's
#: own task variables, distributed-training coordinates, the run's XT_* (core/auth/jobenv.py
#: applies the same list to the kernel's environment when it starts job processes)
ENV_ALLOWED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE", "LC_*",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "LD_LIBRARY_PATH",
    "CUDA_*", "NVIDIA_*", "OMP_*", "MKL_*", "OPENBLAS_*", "NUMEXPR_*",
    "PYTHON*", "PIP_*", "VIRTUAL_ENV", "CONDA_*", "XT_*",
    "SLURM_*",  # Slurm's task variables, and SLURM_CONF for sbatch/squeue started with this env
    "AZ_BATCH_*", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
)
#: never kept, whatever the list says: the launch secret
ENV_DENIED = frozenset({LAUNCH_ENV, LAUNCH_FILE_ENV})
_ENV_EXACT = frozenset(p for p in ENV_ALLOWED if not p.endswith("*"))
_ENV_PREFIXES = tuple(p[:-1] for p in ENV_ALLOWED if p.endswith("*"))
# words of a variable name that say it holds a secret (names split on _ - .); a word ending in
# KEY(S) or TOKEN(S) too (APIKEY, ACCESSTOKEN)
_SECRET_WORDS = frozenset({"SECRET", "SECRETS", "PASSWORD", "PASSWORDS", "PASSWD", "PASSPHRASE",
                           "CREDENTIAL", "CREDENTIALS", "SAS", "PAT", "CONNSTR", "PRIVATE"})


def secret_reason(name, value=None):
    """Why ``name`` (with ``value``) looks like a credential; None when it does not. (String
    work only: no ``re`` import at runner start-up.)"""
    upper = name.upper()
    if "CONNECTION_STRING" in upper:
        return "its name contains CONNECTION_STRING"
    for word in upper.replace("-", "_").replace(".", "_").split("_"):
        if word in _SECRET_WORDS or word.endswith(("KEY", "KEYS", "TOKEN", "TOKENS")):
            return f"its name contains {word}"
    if value and _url_with_password(str(value).strip()):
        return "its value is a URL with a password"
    return None


def _url_with_password(text):
    """``scheme://user:password@host...``"""
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or not scheme[0].isalpha() or \
            not all(c.isalnum() or c in "+.-" for c in scheme):
        return False
    authority = rest.split("/", 1)[0]
    user, at, _host = authority.rpartition("@")
    name, colon, password = user.partition(":")
    return bool(at and colon and password) and not any(c.isspace() for c in user)


def allowed_environ(environ):
    """The allowlisted, secret-free part of ``environ``."""
    return {k: v for k, v in environ.items()
            if k not in ENV_DENIED and (k in _ENV_EXACT or k.startswith(_ENV_PREFIXES))
            and secret_reason(k, v) is None}


def launch_env(launch):
    """A fresh 0600 launch file for a process this runner starts (the re-exec into a setup env):
    returns the environment entry pointing at it."""
    import tempfile
    fd, path = tempfile.mkstemp(prefix="xt-launch-")
    body = dict(launch, key=launch["key"].hex())
    try:
        _write_all(fd, json.dumps(body).encode())
    finally:
        os.close(fd)
    return {LAUNCH_FILE_ENV: path}


# --------------------------------------------------------------------------------------- events
FINAL_STATES = ("completed", "failed", "cancelled")


def event_record(state, **fields):
    """One events.jsonl record (core/protocol/events.py is the kernel's side of the same format)."""
    t = time.time()
    record = {"time": now_iso(t), "ts": t, "state": state}
    record.update({k: v for k, v in fields.items() if v is not None})
    return record


def event_line(record):
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def parse_events(data):
    """JSON objects of a jsonl blob; torn lines (a writer died mid-append) and non-objects skipped."""
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


# ---------------------------------------------------------------------------------------- store io
def _check_path(path):
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise RunnerError(f"bad store path {path!r} in ticket")
    return parts


class FileIO:
    """Store paths under a shared filesystem root."""

    def __init__(self, root):
        self.root = root

    def _full(self, path):
        return os.path.join(self.root, *_check_path(path))

    def get(self, path):
        try:
            with open(self._full(path), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise RunnerError(f"missing store object {path}") from None

    def put(self, path, data):
        full = self._full(path)
        try:  # the folder usually exists (a run's own): no makedirs's stat and mkdir before
            write_atomic(full, data, mode=0o666)  # store objects: 0666 & ~umask (security.md)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            write_atomic(full, data, mode=0o666)

    def put_file(self, path, local):
        """Move (or, across filesystems, copy in chunks) the file ``local`` to ``path``."""
        full = self._full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        try:
            os.rename(local, full)  # created by open(): 0666 & ~umask already
        except OSError:
            import shutil
            tmp = f"{os.path.join(os.path.dirname(full), '.tmp-' + os.path.basename(full))}." \
                  f"{os.getpid()}"
            shutil.copyfile(local, tmp)
            os.replace(tmp, full)

    def open_append(self, path):
        full = self._full(path)
        try:
            return os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            return os.open(full, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, path, data):
        fd = self.open_append(path)
        try:
            os.write(fd, data)  # one write with O_APPEND: concurrent appenders do not interleave
        finally:
            os.close(fd)


class UrlIO:
    """Store paths as per-path SAS URLs (Azure blob REST, urllib only). Errors name the store
    path, never the URL: the URL carries a SAS token."""

    def __init__(self, urls):
        self.urls = urls
        # append blobs this run makes itself (console, metrics, outputs): created before their
        # first append rather than after a refused one (two requests, not three)
        self.fresh = set()

    def _url(self, path):
        try:
            return self.urls[path]
        except KeyError:
            raise RunnerError(f"ticket has no URL for store path {path}") from None

    def _request(self, method, path, url, data=None, headers=None, ok=()):
        import urllib.error
        import urllib.request
        hdrs = {"x-ms-version": APPEND_API_VERSION}
        hdrs.update(headers or {})
        if data is not None:  # bytes, or a file sent as it is read (never whole in memory)
            hdrs["Content-Length"] = str(os.fstat(data.fileno()).st_size
                                         if hasattr(data, "fileno") else len(data))
        for attempt in range(4):
            if hasattr(data, "seek"):
                data.seek(0)
            req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as err:
                if err.code in ok:
                    return err.code, b""
                if err.code < 500 or attempt == 3:
                    raise RunnerError(f"{method} {path}: HTTP {err.code} {err.reason}") from None
            except (urllib.error.URLError, OSError) as err:
                if attempt == 3:
                    reason = getattr(err, "reason", err)
                    raise RunnerError(f"{method} {path}: {type(err).__name__}: {reason}") from None
            time.sleep(0.5 * 2 ** attempt)

    def get(self, path):
        return self._request("GET", path, self._url(path))[1]

    def put(self, path, data):
        self._request("PUT", path, self._url(path), data, {"x-ms-blob-type": "BlockBlob"})

    def put_file(self, path, local):
        with open(local, "rb") as fh:
            self._request("PUT", path, self._url(path), fh, {"x-ms-blob-type": "BlockBlob"})

    def append(self, path, data):
        url = self._url(path)
        block_url = url + ("&" if "?" in url else "?") + "comp=appendblock"
        if path in self.fresh:
            self.fresh.discard(path)
            self._create_append(path, url)
        for i in range(0, len(data), APPEND_BLOCK_MAX):
            chunk = data[i:i + APPEND_BLOCK_MAX]
            status, _ = self._request("PUT", path, block_url, chunk, ok=(404,))
            if status == 404:  # first append: create the append blob
                self._create_append(path, url)
                self._request("PUT", path, block_url, chunk)

    def _create_append(self, path, url):
        # never over an existing one (a requeued run's, or one made since)
        self._request("PUT", path, url, b"", {"x-ms-blob-type": "AppendBlob",
                                               "If-None-Match": "*"}, ok=(409, 412))


def make_io(spec):
    kind = spec.get("kind")
    if kind == "file":
        return FileIO(spec["root"])
    if kind == "urls":
        return UrlIO(spec["urls"])
    raise RunnerError(f"unknown ticket io kind {kind!r}")


def ran_before(io, ticket):
    """Whether an earlier attempt of this run started (a requeued task, a restarted box), so its
    own checkpoint may exist. Not knowing counts as yes."""
    try:
        events = parse_events(io.get(ticket["paths"]["events"]))
    except Exception:  # noqa: BLE001 - e.g. a launch with no read access to the events
        return True
    return any(e.get("state") == "running" and e.get("run") == ticket.get("run") for e in events)


def append_event(io, ticket, state, key=None, **fields):
    """Append a state event naming the job and run; signed when ``key`` is given."""
    record = event_record(state, job=ticket.get("job"), run=ticket.get("run"), **fields)
    if key is not None:
        record["sig"] = sign_fields(key, record)
    io.append(ticket["paths"]["events"], event_line(record))


# ------------------------------------------------------------------------- console and metrics
class Console:
    """The run's console.txt: file io writes through; urls io batches ~every second."""

    def __init__(self, io, path, mirror_fd=None):
        self.io, self.path, self.mirror_fd = io, path, mirror_fd
        self.buffered = isinstance(io, UrlIO)
        self.pending, self.last = [], time.monotonic()

    def write(self, data):
        if self.mirror_fd is not None:
            try:
                os.write(self.mirror_fd, data)
            except OSError:
                pass
        if not self.buffered:
            self.io.append(self.path, data)
            return
        self.pending.append(data)
        self.tick()

    def say(self, text):
        self.write((text.rstrip("\n") + "\n").encode("utf-8", "replace"))

    def tick(self, force=False):
        if self.pending and (force or time.monotonic() - self.last >= FLUSH_SECONDS):
            n = len(self.pending)  # other threads may append meanwhile: take only these n
            data, self.pending[:n] = b"".join(self.pending[:n]), []
            self.last = time.monotonic()
            self.io.append(self.path, data)


def _jsonable(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    try:
        return float(value)  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(value)


class Metrics:
    """Buffered metrics.jsonl records: ``{"kind": "metrics"|"hparams", "step", "ts", "values"}``.

    ``log`` only appends to a list; a daemon thread (started by the first ``log``) and exit flush.
    """

    def __init__(self, io, path):
        import _thread
        self.io, self.path, self.pending, self.last = io, path, [], time.monotonic()
        self.lock, self.flusher = _thread.allocate_lock(), False
        self.feeders = []  # called before each flush (the run's spool: RunSpool.tick)

    def _add(self, kind, step, values):
        rec = {"kind": kind, "ts": time.time(), "values": {str(k): _jsonable(v)
                                                           for k, v in values.items()}}
        if step is not None:
            rec["step"] = _jsonable(step)
        self.pending.append(rec)  # list.append is atomic; json at flush time keeps log() cheap

    def log(self, step=None, **values):
        self._add("metrics", step, values)
        self.start()

    def start(self):
        if not self.flusher:
            self.flusher = True
            import _thread
            _thread.start_new_thread(self._flush_loop, ())

    def log_hparams(self, **values):
        self._add("hparams", None, values)

    def _flush_loop(self):
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.tick()
            except Exception as err:  # a transient store error: keep buffering, retry later
                sys.__stderr__.write(f"[xt] metrics flush failed: {err}\n")

    def tick(self, force=False):
        with self.lock:
            for feed in self.feeders:
                feed()
            if self.pending and (force or time.monotonic() - self.last >= FLUSH_SECONDS):
                n = len(self.pending)
                data = "".join(json.dumps(rec) + "\n" for rec in self.pending[:n])
                self.io.append(self.path, data.encode())
                del self.pending[:n]  # only once written: a failed append loses nothing
                self.last = time.monotonic()


class Capture:
    """Send fds 1 and 2 (so subprocesses and C code are captured too) to the console.

    File io: both fds append straight to console.txt (no thread, nothing buffered). Urls io: a
    pipe and a pump thread that tees to the original stdout and batches appends."""

    def __init__(self, console, ticks):
        self.console, self.ticks, self.thread = console, ticks, None

    def start(self):
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.saved = (os.dup(1), os.dup(2))
        if self.console.buffered:
            import threading
            self.console.mirror_fd = self.saved[0]
            self.read_fd, w = os.pipe()
        else:
            w = self.console.io.open_append(self.console.path)
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)
            except (AttributeError, ValueError):
                pass
        if self.console.buffered:
            self.stopping = False
            self.thread = threading.Thread(target=self._pump, name="xt-console", daemon=True)
            self.thread.start()

    def _pump(self):
        import select
        while True:
            ready = select.select([self.read_fd], [], [], FLUSH_SECONDS / 2)[0]
            if ready:
                data = os.read(self.read_fd, 65536)
                if not data:
                    break
                self.console.write(data)
            elif self.stopping:
                break
            for tick in self.ticks:
                try:
                    tick()
                except Exception as err:  # a transient store error must not kill the tee
                    os.write(self.saved[1], f"[xt] flush failed: {err}\n".encode())

    def stop(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        if self.thread is not None:
            self.stopping = True  # the pump ends at EOF, or when idle if a child holds the pipe
            self.thread.join(10)
        self.console.tick(force=True)


# ------------------------------------------------------------------------------------ phase 1
class SetupError(RunnerError):
    pass


def _stream(cmd, console, env=None):
    """Run a command, copying its output line by line to the console; return its exit code."""
    import subprocess
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        console.write(line)
        console.tick()
    return proc.wait()


def _pip_specs(specs):
    """``pkg==*`` means the locally installed version: already visible to the env, so skipped
    when installed here, installed unpinned otherwise."""
    from importlib import metadata
    out = []
    for spec in specs:
        spec = str(spec).strip()
        if spec.endswith("==*"):
            try:
                metadata.version(spec[:-3])
                continue
            except metadata.PackageNotFoundError:
                spec = spec[:-3]
        out.append(spec)
    return out


def realise_env(setup, console):
    """Python of the setup's environment, building it once per setup hash under a file lock."""
    import fcntl
    import hashlib
    import re
    pip = _pip_specs(setup.get("pip-packages") or [])
    conda = [str(p) for p in setup.get("conda-packages") or []]
    name = setup.get("name") or "?"
    key = setup.get("hash") or hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", key) or key.startswith("."):
        raise SetupError(f"setup {name!r}: bad setup hash {key!r}")
    envs = os.path.join(xt_home(), "envs")
    env_dir = os.path.join(envs, key)
    python = os.path.join(env_dir, "bin", "python")
    ready = os.path.join(env_dir, ".xt-ready")
    if os.path.exists(ready):
        return python
    os.makedirs(envs, exist_ok=True)
    with open(env_dir + ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.say(f"[xt] waiting for another run to build environment {key[:12]}")
            console.tick(force=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(ready):
            return python
        _remove(env_dir)  # leftovers of a build that was killed
        console.say(f"[xt] building environment {key[:12]} for setup {name!r}: "
                    f"pip {pip or '-'} conda {conda or '-'}")
        console.tick(force=True)
        t0 = time.time()
        try:
            _build_env(env_dir, python, pip, conda, name, console)
            with open(ready, "w") as fh:
                fh.write(now_iso(time.time()) + "\n")
        except BaseException:
            _remove(env_dir)  # a failed build never poisons the cache
            raise
        console.say(f"[xt] environment {key[:12]} ready in {time.time() - t0:.1f}s")
        return python


def _remove(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- work dirs
def workdir_base():
    """``$TMPDIR/xt-runs-<uid>``: this user's private (0700) parent of run work dirs. One shared
    folder would be another user's to create, read or fill."""
    base = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"xt-runs-{os.getuid()}")
    try:
        st = os.lstat(base)  # it usually exists: one lstat, not a failing mkdir and an lstat
    except FileNotFoundError:
        try:
            os.mkdir(base, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(base)
    import stat
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RunnerError(f"work dir base {base} is not a folder of this user: refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


def make_workdir(run, parent=None, pstart=None):
    """A new private work dir (0700, unpredictable name) named after this process, so a sweep can
    tell when its run is gone: ``{run}.{pid}-{pstart}.{random}``. (tempfile would cost every run
    its import; os.mkdir with a random name is what mkdtemp does.) ``parent``: ``workdir_base()``
    already checked by this process; ``pstart``: this process's start time, already read."""
    base = parent or workdir_base()
    pid = os.getpid()
    if pstart is None:
        pstart = proc_start(pid)
    while True:
        path = os.path.join(base, f"{run}.{pid}-{pstart}.{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def sweep_workdirs():
    """Remove the work dirs of runs whose process is gone (killed runs leave theirs behind);
    returns the checked base folder (None when it is unusable)."""
    try:
        base = workdir_base()
        names = os.listdir(base)
    except (OSError, RunnerError):
        return None
    for name in names:
        try:
            pid, pstart = name.rsplit(".", 2)[-2].split("-")
            gone = not proc_alive(int(pid), int(pstart) if pstart != "None" else None)
        except (ValueError, IndexError):
            continue
        if gone:
            _remove(os.path.join(base, name))
    return base


def _build_env(env_dir, python, pip, conda, name, console):
    import shutil
    import site
    if conda:
        exe = shutil.which("conda") or shutil.which("mamba")
        if not exe:
            raise SetupError(f"setup {name!r} lists conda-packages {conda} but conda is not "
                             "installed on this node: install conda or use pip-packages")
        ver = "%d.%d" % sys.version_info[:2]
        rc = _stream([exe, "create", "-y", "-p", env_dir, f"python={ver}", *conda], console)
        if rc:
            raise SetupError(f"setup {name!r}: conda create failed (exit {rc}); output above")
    else:
        rc = _stream([sys.executable, "-m", "venv", "--without-pip", env_dir], console)
        if rc:
            raise SetupError(f"setup {name!r}: creating the venv failed (exit {rc})")
        # layer over this interpreter's packages (also when it is itself a venv, which
        # --system-site-packages would skip): the env's own packages come first
        ver = "python%d.%d" % sys.version_info[:2]
        sp = os.path.join(env_dir, "lib", ver, "site-packages")
        with open(os.path.join(sp, "_xt_parent.pth"), "w") as fh:
            fh.write("\n".join(site.getsitepackages()) + "\n")
    if pip:
        import importlib.util
        if importlib.util.find_spec("pip"):
            cmd = [sys.executable, "-m", "pip", "--python", python]
        else:
            if _stream([python, "-m", "ensurepip"], console):
                raise SetupError(f"setup {name!r}: no pip available to install {pip}")
            cmd = [python, "-m", "pip"]
        rc = _stream(cmd + ["install", "--disable-pip-version-check", "--no-input", *pip], console)
        if rc:
            raise SetupError(f"setup {name!r}: pip install {' '.join(pip)} failed (exit {rc}); "
                             "the pip output is above")


def run_activate(activate, python, console):
    """Run ``activate`` in bash; return the environment it leaves (values never printed)."""
    import tempfile
    cur = os.environ.get("CONDA_DEFAULT_ENV", "")
    lines = []
    for line in activate.replace("$call ", "").splitlines():
        line = line.replace("$current_conda_env", cur).strip()
        if line.split() == ["conda", "activate"]:
            continue  # XT's default "conda activate $current_conda_env" outside conda: nothing to do
        lines.append(line)
    if not any(lines):
        return None
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(python) + os.pathsep + env.get("PATH", "")
    with tempfile.NamedTemporaryFile(prefix="xt-env-") as dump:
        script = "set -e\n" + "\n".join(lines) + '\nenv -0 > "$XT_ENV_DUMP"\n'
        env["XT_ENV_DUMP"] = dump.name
        console.say("[xt] running setup activate")
        rc = _stream(["bash", "-c", script], console, env=env)
        if rc:
            raise SetupError(f"setup activate failed (exit {rc}); its output is above")
        raw = open(dump.name, "rb").read().decode("utf-8", "replace")
    out = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    out.pop("XT_ENV_DUMP", None)
    return out


def setup_phase(ticket, ticket_path, console, launch):
    """Realise the setup and re-exec in it; returns only when no re-exec is needed."""
    setup = ticket.get("setup") or {}
    python = sys.executable
    if setup.get("pip-packages") or setup.get("conda-packages"):
        python = realise_env(setup, console)
    env = run_activate(setup["activate"], python, console) if setup.get("activate") else None
    if python == sys.executable and env is None:
        return
    console.tick(force=True)
    sys.stdout.flush()
    env = dict(env if env is not None else os.environ, **launch_env(launch))
    os.execve(python, command(python, ticket_path, "--phase2"), env)


# ------------------------------------------------------------------------------------ phase 2
def _sha256(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def _own_cloudpickle(version):
    """Whether the cloudpickle this process already imported (a warm supervisor's fork) is the
    bundle's version, so the bundled zip need not be fetched and imported. Another version is
    dropped from sys.modules: the bundle's own is imported from its zip instead."""
    mod = sys.modules.get("cloudpickle")
    if mod is None:
        return False
    if version and str(getattr(mod, "__version__", "")) == str(version):
        return True
    for name in [n for n in sys.modules if n == "cloudpickle" or n.startswith("cloudpickle.")]:
        del sys.modules[name]
    return False


#: a node keeps the job objects it fetched over URLs (cell, inputs, snapshot...) up to this size
#: under ``$XT_HOME/objects/<sha256>``, so the job's next runs there skip the request; the signed
#: ticket's sha256 is checked at every read, and the oldest entries go past the count
OBJECT_CACHE_MAX_BYTES, OBJECT_CACHE_ENTRIES = 4 << 20, 256


def _fetch_checked(io, path, sha, what):
    cached = _object_cache(io, sha)
    if cached:
        try:
            with open(cached, "rb") as fh:
                data = fh.read()
            if _sha256(data) == sha:
                return data
        except OSError:
            pass
    data = io.get(path)
    if sha and _sha256(data) != sha:
        raise RunnerError(f"{what} {path} failed its sha256 check: refusing to load it")
    if cached and len(data) <= OBJECT_CACHE_MAX_BYTES:
        try:
            folder = os.path.dirname(cached)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            names = os.listdir(folder)
            if len(names) >= OBJECT_CACHE_ENTRIES:
                entries = sorted((os.path.join(folder, n) for n in names), key=_mtime)
                for old in entries[:len(entries) // 2]:
                    try:
                        os.unlink(old)
                    except OSError:
                        pass
            write_atomic(cached, data, mode=0o600)
        except OSError:
            pass  # a cache only: the run goes on
    return data


def _object_cache(io, sha):
    """Where a remote job object with this sha256 is kept on this node (None: not cached)."""
    if not isinstance(io, UrlIO) or not isinstance(sha, str) or len(sha) != 64 \
            or sha.strip("0123456789abcdef"):
        return None
    return os.path.join(xt_home(), "objects", sha)


def _mtime(path):
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def safe_extract(source, dest, what="snapshot"):
    """Unpack a zip (bytes, or the path of a zip file: read in chunks, never whole) refusing
    absolute paths, ``..``, drive letters, links, names that are no file (``.``), a name used as
    both a file and a folder, and names too long for the filesystem; every entry is checked before
    anything is written. Returns the names extracted. (The kernel uses this one too.)"""
    import io as _io
    import stat
    import zipfile
    dest = os.path.realpath(dest)
    names = []
    src = source if isinstance(source, (str, os.PathLike)) else _io.BytesIO(source)
    with zipfile.ZipFile(src) as zf:
        infos = zf.infolist()
        files, folders = set(), set()
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            parts = name.replace("\\", "/").split("/")
            kept = [p for p in parts if p and p != "."]
            target = os.path.realpath(os.path.join(dest, *kept))
            if (name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]
                    or stat.S_ISLNK(mode)
                    or (target != dest and not target.startswith(dest + os.sep))):
                raise RunnerError(f"unsafe path {name!r} in {what}: refusing to unpack")
            if not kept:
                if info.is_dir():
                    continue  # "./": the destination itself
                raise RunnerError(f"entry {name!r} in {what} names no file: refusing to unpack")
            if (len(os.path.join(dest, *kept).encode()) >= 4096
                    or any(len(p.encode()) > 255 for p in kept)):
                raise RunnerError(f"entry {name[:80]!r}... in {what}: name too long for the "
                                  "filesystem; refusing to unpack")
            key = "/".join(kept)
            (folders if info.is_dir() else files).add(key)
            folders.update("/".join(kept[:i]) for i in range(1, len(kept)))
        clash = sorted(files & folders)
        if clash:
            raise RunnerError(f"entry {clash[0]!r} in {what} is both a file and a folder: "
                              "refusing to unpack")
        for info in infos:
            parts = [p for p in info.filename.replace("\\", "/").split("/") if p and p != "."]
            if not parts:
                continue
            target = os.path.join(dest, *parts)
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(info) as fin, open(target, "wb") as out:
                while True:
                    chunk = fin.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            if (info.external_attr >> 16) & 0o111:
                os.chmod(target, 0o755)
            names.append(info.filename)
    return names


def _zip_dir(folder, dest, extra=()):
    """Zip every regular file under ``folder`` and the ``extra`` (name, file) pairs into the file
    ``dest`` (streamed: outputs may be larger than memory); the number of files."""
    import zipfile
    count = 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, full in extra:
            zf.write(full, name)
            count += 1
        for base, dirs, files in os.walk(folder):
            for f in sorted(files):
                full = os.path.join(base, f)
                if os.path.isfile(full) and not os.path.islink(full):
                    zf.write(full, os.path.relpath(full, folder))
                    count += 1
    return count


def sha256_file(path):
    """sha256 of a file read in chunks. (The kernel uses this one too.)"""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install_sinks(metrics):
    """Make ``xt_magic.log`` reach this run's metrics, with or without xt_magic installed."""
    module_type = type(sys)
    sink = module_type(SINK_MODULE)
    sink.log, sink.log_hparams = metrics.log, metrics.log_hparams
    sys.modules[SINK_MODULE] = sink
    if not _importable("xt_magic"):
        standin = module_type("xt_magic")
        standin.__doc__ = "Stand-in provided by the xt_magic runner (xt_magic is not installed)."
        standin.log, standin.log_hparams = metrics.log, metrics.log_hparams
        standin.__xt_standin__ = True
        # the run's spool module: RunSpool puts it on sys.path
        standin.checkpoint = lambda obj: __import__("_xt_spool").save_object(obj)
        standin.restore = lambda default=None: __import__("_xt_spool").load_object(default)
        sys.modules["xt_magic"] = standin


_CELL = []  # the cell source, given to linecache only when a traceback needs it (saves imports)


def _cell_traceback(err):
    """Traceback text starting at the cell (runner frames dropped)."""
    import linecache
    import traceback
    if _CELL:
        linecache.cache[CELL_FILENAME] = (len(_CELL[0]), None, _CELL[0].splitlines(True),
                                          CELL_FILENAME)
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != CELL_FILENAME:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))


# ------------------------------------------------------------------------------- cell outputs
# The cell runs as a notebook cell: prints, displays, figures and the last expression's value
# become nbformat v4 output dicts, one JSON line each in the run's outputs.jsonl, and the run's
# notebook (a parameters cell, then the cell with its outputs) is written when it ends.
OUTPUT_FLUSH_SECONDS = 0.25
OUTPUT_FLUSH_BYTES = 1 << 20          # flush at once past this much pending (figures in a loop)
OUTPUT_SPOOL = ".xt-outputs.jsonl"    # local copy the run notebook is built from, then removed
# the richest reprs first; text/plain is always added
MIME_REPRS = (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
              ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png"),
              ("_repr_jpeg_", "image/jpeg"), ("_repr_latex_", "text/latex"),
              ("_repr_json_", "application/json"), ("_repr_javascript_", "application/javascript"))
# a cell mentioning one of these runs in an IPython shell (when the node has IPython): ~80 ms of
# imports that a plain cell does not pay
IPYTHON_MARKERS = ("IPython", "display(", "clear_output", "get_ipython", "%matplotlib")


def _b64(data):
    import base64
    return base64.b64encode(data).decode("ascii")


def _clean_bundle(data):
    """A mime bundle made JSON-ready as nbformat stores it: bytes images as base64 text."""
    out = {}
    for mime, value in (data or {}).items():
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray)):
            value = _b64(value) if mime.startswith("image/") and mime != "image/svg+xml" \
                else bytes(value).decode("utf-8", "replace")
        elif not mime.endswith("json") and not isinstance(value, str):
            value = str(value)
        out[str(mime)] = value
    return out


def mimebundle(value):
    """(data, metadata) for ``value`` from its ``_repr_*_`` methods, richest first, plus
    text/plain; a matplotlib figure becomes image/png."""
    data, meta = {}, {}
    if not isinstance(value, type):  # a class's _repr_html_ is an unbound method
        bundle = getattr(value, "_repr_mimebundle_", None)
        if callable(bundle):
            try:
                got = bundle()
                got, got_meta = got if isinstance(got, tuple) else (got, {})
                data.update(got or {})
                meta.update(got_meta or {})
            except Exception:
                pass
        for attr, mime in MIME_REPRS:
            method = getattr(value, attr, None)
            if mime in data or not callable(method):
                continue
            try:
                got = method()
            except Exception:
                continue
            if isinstance(got, tuple) and len(got) == 2:
                got, meta[mime] = got
            if got is not None:
                data[mime] = got
        if type(value).__module__ == "matplotlib.figure" and "image/png" not in data:
            data["image/png"] = _figure_png(value)
    try:
        data["text/plain"] = repr(value)
    except Exception as err:
        data["text/plain"] = f"<{type(value).__name__}: repr failed: {err}>"
    return _clean_bundle(data), meta


def _figure_png(fig):
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return _b64(buf.getvalue())


class Outputs:
    """The run's outputs.jsonl: nbformat v4 output dicts appended as they happen.

    Consecutive writes to one stream are joined; a daemon thread appends about every 0.25 s (at
    once past 1 MB pending), so memory holds one flush's worth at most (a 500-figure loop stays
    flat). Past ``max_bytes`` one note output says where outputs were cut and the rest is dropped
    (console.txt still has every printed line). ``sha256`` covers every byte appended, in order:
    the final event carries it so the client checks what it renders. ``clear_output`` is stored as
    ``{"output_type": "clear_output", "wait": bool}``, applied when the notebook is built."""

    def __init__(self, io, path, spool_path, max_bytes, key, run):
        import _thread
        import hashlib
        self.io, self.path, self.max_bytes, self.key, self.run = io, path, max_bytes, key, run
        self.lock, self.io_lock = _thread.allocate_lock(), _thread.allocate_lock()
        self.pending, self.pending_bytes, self.total, self.count = [], 0, 0, 0
        self.stream_name, self.stream_parts = None, []
        self.cut = self.closed = self.flusher = False
        self.hash, self.unsent = hashlib.sha256(), b""
        # what was written, for the run notebook: in memory, spilled to a local file past 1 MB
        self.spool_path, self.spool, self.kept, self.kept_bytes = spool_path, None, [], 0
        self.open = True

    # -- recording (any thread)
    def _line(self, record):
        """The signed JSON line of ``record``: ``sig`` covers it, its sequence number and the
        run id, so the kernel checks each line before showing it (no line added or reordered)."""
        record = json.loads(json.dumps(record, default=str))  # signed = what the kernel parses
        record["xt_seq"] = self.count
        record["sig"] = sign_fields(self.key, dict(record, xt_run=self.run))
        return (json.dumps(record) + "\n").encode()

    def _add(self, record):  # self.lock held
        if self.cut:
            return
        line = self._line(record)
        if self.total + len(line) > self.max_bytes:
            room = self.max_bytes - self.total - len(line) + len(record.get("text") or "")
            if record.get("output_type") == "stream" and room > 0:  # keep the text that fits
                self._add(dict(record, text=record["text"][:room // 2]))  # //2: json escapes
                if self.cut:
                    return
            self.cut = True
            mb = self.max_bytes / 2 ** 20
            line = self._line({"output_type": "stream", "name": "stderr", "text": (
                f"[xt] outputs cut here: this run's outputs passed the {mb:g} MB limit "
                "(general.max-output-mb); console.txt has every printed line\n")})
        self.pending.append(line)
        self.pending_bytes += len(line)
        self.total += len(line)
        self.count += 1

    def _end_stream(self):  # self.lock held
        if self.stream_parts:
            self._add({"output_type": "stream", "name": self.stream_name,
                       "text": "".join(self.stream_parts)})
            self.stream_parts = []

    def stream(self, name, text):
        with self.lock:
            if self.stream_name != name:
                self._end_stream()
                self.stream_name = name
            self.stream_parts.append(text)
        self._kick()

    def add(self, record):
        with self.lock:
            self._end_stream()
            self._add(record)
        self._kick()

    def display(self, data, metadata=None):
        self.add({"output_type": "display_data", "data": _clean_bundle(data),
                  "metadata": metadata or {}})

    def result(self, data, metadata=None):
        self.add({"output_type": "execute_result", "execution_count": 1,
                  "data": _clean_bundle(data), "metadata": metadata or {}})

    def clear(self, wait=False):
        self.add({"output_type": "clear_output", "wait": bool(wait)})

    def error(self, err, traceback_text):
        self.add({"output_type": "error", "ename": type(err).__name__, "evalue": str(err),
                  "traceback": traceback_text.rstrip("\n").split("\n")})

    # -- writing
    def _kick(self):
        if self.pending_bytes > OUTPUT_FLUSH_BYTES:
            self.flush()
        elif not self.flusher and not self.closed:
            self.flusher = True
            import _thread
            _thread.start_new_thread(self._flush_loop, ())

    def _flush_loop(self):
        while not self.closed:
            time.sleep(OUTPUT_FLUSH_SECONDS)
            try:
                self.flush()
            except Exception as err:  # a transient store error: keep the data, retry later
                sys.__stderr__.write(f"[xt] outputs flush failed: {err}\n")

    def flush(self):
        with self.io_lock:  # one writer at a time keeps the lines in order
            with self.lock:
                self._end_stream()
                lines, self.pending, self.pending_bytes = self.pending, [], 0
            new = b"".join(lines)
            if not self.open or not (new or self.unsent):
                return
            self._keep(new)
            data = self.unsent = self.unsent + new
            self.io.append(self.path, data)
            self.hash.update(data)
            self.unsent = b""

    def _keep(self, data):  # self.io_lock held
        if self.spool is None and self.kept_bytes + len(data) > OUTPUT_FLUSH_BYTES:
            self.spool = open(self.spool_path, "wb")
            self.spool.writelines(self.kept)
            self.kept = []
        if self.spool is not None:
            self.spool.write(data)
        else:
            self.kept.append(data)
            self.kept_bytes += len(data)

    def close(self):
        """Write what is left; return every record written, in order."""
        self.closed = True
        self.flush()
        with self.io_lock:
            self.open, spool = False, self.spool
        if spool is None:
            return [json.loads(line) for line in b"".join(self.kept).splitlines()]
        spool.close()
        try:
            with open(self.spool_path, "rb") as fh:
                return [json.loads(line) for line in fh]
        finally:
            os.unlink(self.spool_path)


class _Tee:
    """sys.stdout / sys.stderr stand-in: text goes on to the real stream (fd 1/2: the console)
    and into the outputs as a stream output."""

    def __init__(self, real, name, outputs):
        self._real, self._name, self._outputs = real, name, outputs

    def write(self, text):
        n = self._real.write(text)
        if text:
            self._outputs.stream(self._name, str(text))
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _PyplotHook:
    """Meta path entry that patches ``matplotlib.pyplot`` right after it is first imported."""

    def __init__(self, on_load):
        self.on_load = on_load

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module, on_load = spec.loader.exec_module, self.on_load

        def exec_and_patch(module):
            exec_module(module)
            on_load(module)
        spec.loader.exec_module = exec_and_patch  # this spec's own loader instance
        return spec


class CellRun:
    """Runs the cell as a notebook cell, recording its outputs (``capture`` off: plain exec)."""

    def __init__(self, ticket, io, cell, ns, workdir, key, metrics=None):
        self.ticket, self.cell, self.shell, self.outputs = ticket, cell, None, None
        capture, paths = ticket.get("capture") or {}, ticket["paths"]
        if not (capture and paths.get("outputs")):
            self.code = compile(cell, CELL_FILENAME, "exec")
            return
        if "MPLBACKEND" not in (ticket.get("env") or {}):
            os.environ["MPLBACKEND"] = "Agg"  # a kernel's inline backend would only print reprs
        self.outputs = Outputs(io, paths["outputs"], os.path.join(workdir, OUTPUT_SPOOL),
                               int(capture.get("max_bytes") or 20 * 2 ** 20), key, ticket["run"])
        self.input_names = sorted(k for k in ns if k not in ("__name__", "__builtins__"))
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            self._patch_pyplot(plt)
        else:
            self.hook = _PyplotHook(self._patch_pyplot)
            sys.meta_path.insert(0, self.hook)
        if (ipython_lines(cell) or any(m in cell for m in IPYTHON_MARKERS)) \
                and _importable("IPython"):
            self.shell = _ipython_shell(self.outputs, ns)
        else:
            import ast
            try:
                tree = ast.parse(cell, CELL_FILENAME)
            except SyntaxError:
                if ipython_lines(cell):
                    raise RunnerError("the cell has !cmd or %magic lines and the node's python "
                                      f"({sys.executable}) has no IPython: add ipython to the "
                                      "setup's pip-packages") from None
                raise
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr) \
                    and not cell.rstrip().endswith(";"):  # `;` hides the value, as in Jupyter
                last = ast.Expression(tree.body.pop().value)
            self.code = compile(tree, CELL_FILENAME, "exec")
            self.last = compile(last, CELL_FILENAME, "eval") if last else None
            ns.setdefault("display", self.display)
        self.saved_streams = sys.stdout, sys.stderr
        sys.stdout = _Tee(sys.stdout, "stdout", self.outputs)
        sys.stderr = _Tee(sys.stderr, "stderr", self.outputs)

    def display(self, *objs, **_ignored):
        """``display`` for cells on a node without IPython."""
        for obj in objs:
            self.outputs.display(*mimebundle(obj))

    def _patch_pyplot(self, plt):
        def show(*args, **kwargs):
            self.figures()
        plt.show = show

    def figures(self):
        """Every open figure as image/png, then closed (what the inline backend does)."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None or self.outputs is None:
            return
        for num in plt.get_fignums():
            fig = plt.figure(num)
            self.outputs.display({"image/png": _figure_png(fig), "text/plain": repr(fig)})
        plt.close("all")

    def run(self, ns):
        """Run the cell; its exception (if any) propagates after being recorded as an output."""
        if self.outputs is None:
            exec(self.code, ns)
            return
        try:
            if self.shell is not None:
                res = self.shell.run_cell(self.cell, store_history=True)
                err = res.error_before_exec or res.error_in_exec
                if err is not None:
                    raise err
            else:
                exec(self.code, ns)
                if self.last is not None:
                    value = eval(self.last, ns)
                    if value is not None:
                        ns["_"] = value
                        self.outputs.result(*mimebundle(value))
        except Cancelled:
            raise
        except BaseException as err:
            self.figures()
            if not (isinstance(err, SystemExit) and err.code in (None, 0)):
                self.outputs.error(err, _cell_traceback(err))
            raise
        self.figures()

    def close(self, io, state):
        """Stop recording; return the final event's fields (with what the run notebook needs)."""
        if self.outputs is None:
            return {}
        sys.stdout, sys.stderr = self.saved_streams
        hook = getattr(self, "hook", None)
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)
        records = self.outputs.close()
        fields = {"outputs_sha256": self.outputs.hash.hexdigest(),
                  "outputs_count": self.outputs.count}
        # no run.ipynb written: the kernel builds it (run_notebook) from the signed ticket, the
        # cell it checks against the ticket's sha256, the checked outputs and these signed fields
        if self.ticket["paths"].get("notebook"):
            fields["notebook"] = {"inputs": self.input_names, "python": _python_version()}
        return fields


def ipython_lines(cell):
    """True if a line looks like IPython syntax (``!cmd``, ``%magic``, ``x = !cmd``)."""
    if "!" not in cell and "%" not in cell:
        return False  # most cells: no regex compiled (a forked run would compile it every time)
    import re
    return re.search(r"^[ \t]*([\w.,\t ]+=[ \t]*)?[!%]", cell, re.M) is not None


def _ipython_shell(outputs, ns):
    """An IPython shell whose display publisher and displayhook record into ``outputs``, so
    ``display``, ``clear_output``, ``!cmd`` and line magics work as in a kernel."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                    **kwargs):
            outputs.display(data, metadata)

        def clear_output(self, wait=False):
            outputs.clear(wait)

    class Hook(DisplayHook):
        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            outputs.result(format_dict, md_dict)

        def finish_displayhook(self):
            pass

    class Shell(InteractiveShell):
        def _showtraceback(self, etype, evalue, stb):
            pass  # CellRun records the error output (and the failed event) itself

    cfg = Config()
    cfg.HistoryManager.enabled = False  # no sqlite history on the node
    shell = Shell.instance(config=cfg, user_ns=ns, display_pub_class=Publisher,
                           displayhook_class=Hook, colors="nocolor")
    shell.compile.get_code_name = lambda *args: CELL_FILENAME  # tracebacks start at the cell
    return shell


def notebook_outputs(records):
    """nbformat outputs from outputs.jsonl records: clear_output applied, streams joined."""
    outs, clear_next = [], False
    for rec in records:
        rec = {k: v for k, v in rec.items() if k not in ("sig", "xt_seq")}
        kind = rec.get("output_type")
        if kind == "clear_output":
            if rec.get("wait"):
                clear_next = True
            else:
                outs = []
            continue
        if clear_next:
            outs, clear_next = [], False
        if kind == "stream" and outs and outs[-1].get("output_type") == "stream" \
                and outs[-1].get("name") == rec.get("name"):
            outs[-1] = dict(outs[-1], text=outs[-1]["text"] + rec.get("text", ""))
            continue
        outs.append(rec)
    return outs


def _python_version():
    return "%d.%d.%d" % sys.version_info[:3]


def run_notebook(ticket, cell, input_names, records, state, python=None):
    """The run as an nbformat v4 notebook: parameters, then the cell with its outputs.
    ``python``: the version of the python that ran it (default: this one)."""
    hp = ticket.get("hparams") or {}
    lines = [f"# Parameters of {ticket['run']} ({ticket['job']})"]
    given = hp_namespace(hp)  # what the cell got
    lines += [f"{k} = {v!r}" for k, v in given.items() if hp]
    names = [n for n in input_names if n not in given]
    if names:
        lines.append("# inputs (values from the submitting kernel): " + ", ".join(names))

    def code(cid, source, outputs, count, tags=None):
        return {"cell_type": "code", "id": cid, "metadata": {"tags": tags} if tags else {},
                "source": source, "outputs": outputs, "execution_count": count}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "version": python or _python_version()},
        "xt": {"job": ticket["job"], "run": ticket["run"], "workspace": ticket.get("workspace"),
               "state": state, "hparams": hp}},
        "cells": [code("xt-parameters", "\n".join(lines), [], None, ["parameters"]),
                  code("xt-cell", cell, notebook_outputs(records), 1)]}


# --------------------------------------------------------------------------- notebook jobs
class NotebookRun:
    """Runs a whole notebook (papermill style) in a kernel on this node, with nbclient.

    The run's parameters go into a cell tagged ``injected-parameters`` after the cell tagged
    ``parameters`` (at the top if there is none). Each executed cell's outputs are appended to
    outputs.jsonl as it ends; the executed notebook is the run notebook. ``xt_magic.log`` in the
    kernel reaches the run's metrics through the run's spool (RunSpool), as from any process."""

    def __init__(self, ticket, io, cell, ns, workdir, key, metrics):
        missing = [m for m in ("nbclient", "ipykernel") if not _importable(m)]
        if missing:
            raise RunnerError(f"notebook jobs need {' and '.join(missing)} in the node's python "
                              f"({sys.executable}): add them to the setup's pip-packages")
        import nbformat
        self.ticket, self.workdir = ticket, workdir
        self.nb = nbformat.reads(cell, as_version=4)
        self.injected = inject_parameters(self.nb, ticket.get("hparams") or {})
        capture, paths = ticket.get("capture") or {}, ticket["paths"]
        self.outputs = Outputs(io, paths["outputs"], os.path.join(workdir, OUTPUT_SPOOL),
                               int(capture.get("max_bytes") or 20 * 2 ** 20), key,
                               ticket["run"]) if capture and paths.get("outputs") else None
        if "MPLBACKEND" not in (ticket.get("env") or {}):
            os.environ.pop("MPLBACKEND", None)  # the kernel's own inline backend shows figures

    def _index(self, cell_index):
        """The cell's index in the submitted notebook (without the injected cell)."""
        return cell_index - (cell_index > self.injected)

    def run(self, ns):
        import re
        from jupyter_client.kernelspec import KernelSpec
        from jupyter_client.manager import KernelManager
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError

        class HereKernel(KernelManager):
            """A kernel on this very python (the setup's), whatever kernelspecs say."""
            @property
            def kernel_spec(self):
                return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                        "{connection_file}"], display_name="Python 3",
                                  language="python")

        def executed(cell, cell_index, execute_reply):
            for out in cell.get("outputs") or ():
                if self.outputs is not None:
                    self.outputs.add(json.loads(json.dumps(out)))
        # ipc sockets in the run's own folder: not reachable over TCP by other users of the node
        km = HereKernel(transport="ipc", ip=os.path.join(self.workdir, ".xt-kernel"))
        client = NotebookClient(self.nb, km=km, timeout=None, startup_timeout=120,
                                on_cell_executed=executed,
                                resources={"metadata": {"path": self.workdir}})
        failed = []
        client.on_cell_error = lambda cell, cell_index, execute_reply: failed.append(cell_index)
        try:
            client.execute(cwd=self.workdir)
        except CellExecutionError as err:
            index = self._index(failed[0]) if failed else None
            tb = re.sub(r"\x1b\[[0-9;]*m", "", err.traceback or "")
            exc = RunnerError(f"cell {index}: {err.ename}: {err.evalue}")
            exc.xt_error = {"type": err.ename, "message": f"cell {index}: {err.evalue}",
                            "traceback": tb, "cell": index}
            raise exc from None

    def close(self, io, state):
        import nbformat
        fields = {}
        if self.outputs is not None:
            self.outputs.close()
            fields = {"outputs_sha256": self.outputs.hash.hexdigest(),
                      "outputs_count": self.outputs.count}
        path = self.ticket["paths"].get("notebook") if self.ticket.get("capture") else None
        if path:
            self.nb.metadata["xt"] = {"job": self.ticket["job"], "run": self.ticket["run"],
                                      "workspace": self.ticket.get("workspace"), "state": state,
                                      "hparams": self.ticket.get("hparams") or {}}
            data = nbformat.writes(self.nb).encode()
            io.put(path, data)
            fields["notebook_sha256"] = _sha256(data)
        return fields


def inject_parameters(nb, params):
    """Insert a cell tagged ``injected-parameters`` assigning ``params`` after the cell tagged
    ``parameters`` (papermill's convention; at the top without one); returns its index."""
    import nbformat
    at = next((i + 1 for i, c in enumerate(nb.cells)
               if "parameters" in (c.get("metadata", {}).get("tags") or [])), 0)
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in hp_namespace(params).items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "xt-injected-parameters"
    nb.cells.insert(at, cell)
    return at


def _on_sigterm(signum, frame):
    raise Cancelled()


def hp_namespace(hparams):
    """A run's hyperparameters as cell variables: ``hp`` holds every one by its given name; each
    identifier name is also a variable, and ``batch-size`` is ``batch_size`` too unless another
    name claims that identifier."""
    import keyword
    ns, aliases = {}, {}
    for name, value in hparams.items():
        if name.isidentifier() and not keyword.iskeyword(name):
            ns[name] = value
        else:
            alias = name.replace("-", "_").replace(".", "_")
            if alias.isidentifier() and not keyword.iskeyword(alias):
                aliases.setdefault(alias, []).append(value)
    ns.update({a: v[0] for a, v in aliases.items() if len(v) == 1 and a not in ns})
    ns["hp"] = dict(hparams)
    return ns


def run_phase(ticket, io, console, key):
    import _signal  # the C module: `signal` builds enums at import, which costs startup time
    _signal.signal(_signal.SIGTERM, _on_sigterm)
    paths, bundle = ticket["paths"], ticket.get("bundle") or {}
    pid = os.getpid()
    pstart = proc_start(pid)
    again = ran_before(io, ticket)
    append_event(io, ticket, "running", host=os.uname().nodename, pid=pid, pgid=os.getpgrp(),
                 pstart=pstart)
    metrics = Metrics(io, paths["metrics"])
    capture = Capture(console, (console.tick, metrics.tick))
    capture.start()
    workdir = ticket.get("workdir")
    own_workdir = not workdir
    if own_workdir:
        workdir = make_workdir(ticket["run"], sweep_workdirs(), pstart)
    outdir = os.path.join(os.path.abspath(workdir), "output")
    t0 = time.time()
    result, cells, cell_fields = {}, None, {}
    ns = {}
    try:
        try:
            os.makedirs(outdir, exist_ok=True)
            cell = _fetch_checked(io, bundle["cell"], bundle.get("cell_sha256"),
                                  "cell").decode("utf-8")
            if bundle.get("cloudpickle") and (bundle.get("inputs") or ticket.get("outputs")) \
                    and not _own_cloudpickle(bundle.get("cloudpickle_version")):
                cp = _fetch_checked(io, bundle["cloudpickle"], bundle.get("cloudpickle_sha256"),
                                    "cloudpickle.zip")
                cp_path = os.path.join(workdir, ".xt-cloudpickle.zip")
                with open(cp_path, "wb") as fh:
                    fh.write(cp)
                sys.path.insert(0, cp_path)  # zipimport: nodes need only the stdlib
            if bundle.get("snapshot"):
                safe_extract(_fetch_checked(io, bundle["snapshot"], bundle.get("snapshot_sha256"),
                                            "snapshot"), workdir)
            ns = {"__name__": "__main__", "__builtins__": __builtins__}
            if bundle.get("inputs"):
                raw = _fetch_checked(io, bundle["inputs"], bundle.get("inputs_sha256"), "inputs")
                import pickle
                ns.update(pickle.loads(raw))
            ns.update(hp_namespace(ticket.get("hparams") or {}))
            spool = RunSpool(io, ticket, workdir, metrics, key)
            run_env = spool.install(again)
            install_sinks(metrics)
            sys.path.insert(0, spool.pydir)
            metrics.feeders.append(spool.tick)
            metrics.start()
            run_env.update(fetch_shares(io, ticket, workdir, console))
            if ticket.get("hparams"):
                metrics.log_hparams(**ticket["hparams"])
            os.environ.update({str(k): str(v) for k, v in (ticket.get("env") or {}).items()})
            os.environ.update(xt_environ(ticket, workdir, outdir, run_env))
            os.chdir(workdir)
            sys.path.insert(0, os.path.abspath(workdir))
            sys.argv = [CELL_FILENAME]  # argparse in a cell sees no arguments: its defaults
            _CELL.append(cell)
            if not ticket.get("commands"):  # a script or commands job has no cell to show
                cells = (NotebookRun if ticket.get("kind") == "notebook" else CellRun)(
                    ticket, io, cell, ns, workdir, key, metrics)
        except Cancelled:
            raise
        except BaseException as err:
            import traceback
            result["error"] = {"type": type(err).__name__, "message": str(err),
                               "traceback": "".join(traceback.format_exception(
                                   type(err), err, err.__traceback__))}
        else:
            try:
                if ticket.get("commands"):
                    result.update(run_commands(ticket, workdir))
                else:
                    cells.run(ns)
            except SystemExit as err:
                if err.code not in (None, 0):
                    result["error"] = {"type": "SystemExit", "message": str(err.code),
                                       "traceback": _cell_traceback(err)}
            except Cancelled:
                raise
            except BaseException as err:
                result["error"] = getattr(err, "xt_error", None) or {
                    "type": type(err).__name__, "message": str(err),
                    "traceback": _cell_traceback(err)}
        if "error" not in result:
            result["outputs"] = _save_outputs(ticket, io, ns, outdir)
    except Cancelled:
        console.say("[xt] cancelled (SIGTERM)")
        capture.stop()
        metrics.tick(force=True)
        try:  # what the run made so far stays (an early-stopped run): signed like a result
            saved = _save_outputs(ticket, io, ns, outdir, partial=True)
            if saved:
                append_event(io, ticket, OUTPUTS_EVENT, key, partial=True, **saved)
        except BaseException as err:  # noqa: BLE001 - a second TERM, a store error: give up
            sys.stderr.write(f"xt runner: outputs so far not kept: {type(err).__name__}\n")
        if own_workdir:
            _drop_workdir(workdir, outdir)
        return EXIT_CANCELLED
    except BaseException as err:  # saving outputs failed
        result["error"] = {"type": type(err).__name__, "message": str(err),
                           "traceback": _cell_traceback(err)}
    if cells is not None:
        cell_fields = cells.close(io, "failed" if "error" in result else "completed")
    if "error" in result:
        sys.stderr.write(result["error"]["traceback"])
    capture.stop()
    metrics.tick(force=True)
    duration = round(time.time() - t0, 3)
    if own_workdir:
        _drop_workdir(workdir, outdir)
    if "error" in result:
        append_event(io, ticket, "failed", key, exit_code=result.get("exit_code") or EXIT_FAILED,
                     error=result["error"],
                     reason=f"{result['error']['type']}: {result['error']['message']}"[:500],
                     duration=duration, **cell_fields)
        return EXIT_FAILED
    # signed: the kernel loads outputs only under a valid sig over these sha256s
    append_event(io, ticket, "completed", key, exit_code=EXIT_OK, duration=duration,
                 **result["outputs"], **cell_fields)
    return EXIT_OK


def _drop_workdir(workdir, outdir):
    os.chdir("/")
    xt = os.path.join(workdir, ".xt")
    try:  # the usual case: an empty output dir and the run's own spool (no shutil import)
        os.rmdir(outdir)
        if os.path.isdir(xt):
            for name, drop in (("spool.jsonl", os.unlink), ("checkpoint", os.rmdir)):
                try:
                    drop(os.path.join(xt, name))
                except FileNotFoundError:
                    pass  # nothing recorded, no checkpoint: never made
            os.rmdir(xt)
        os.rmdir(workdir)
    except OSError:
        _remove(workdir)


#: the event (no run state: fold passes it by) a cancelled run's signed outputs so far are in
OUTPUTS_EVENT = "outputs"


def _save_outputs(ticket, io, ns, outdir, partial=False):
    """Write the run's output variables and files; their sha256s (to sign). ``partial`` (a
    cancelled run): the declared variables defined so far, no error for the others."""
    paths, out = ticket["paths"], {}
    names = list(ticket.get("outputs") or [])
    if partial:
        names = [n for n in names if n in ns]
    if names:
        missing = [n for n in names if n not in ns]
        if missing:
            raise NameError(f"output variable(s) {', '.join(missing)} not defined by the cell")
        import cloudpickle
        try:
            data = cloudpickle.dumps({n: ns[n] for n in names})
        except Exception:
            for n in names:  # name the culprit
                try:
                    cloudpickle.dumps(ns[n])
                except Exception as err:
                    raise RunnerError(f"output variable {n!r} cannot be pickled: "
                                      f"{type(err).__name__}: {err}") from None
            raise
        io.put(paths["vars"], data)
        # the size lets the kernel read a small pickle whole instead of streaming it to a file
        out["vars_sha256"], out["vars_size"] = _sha256(data), len(data)
    extra = after_files(os.path.dirname(outdir), outdir, ticket.get("after"))
    if extra or (os.path.isdir(outdir) and os.listdir(outdir)):
        zpath = os.path.join(os.path.dirname(outdir), f".xt-files-{os.getpid()}.zip")
        try:
            count = _zip_dir(outdir, zpath, extra)
            if count:
                sha = sha256_file(zpath)
                io.put_file(paths["files"], zpath)
                out["files_count"], out["files_sha256"] = count, sha
        finally:
            if os.path.exists(zpath):
                os.unlink(zpath)
    return out


# ------------------------------------------- XT's run API, scripts and commands (docs/xt-users.md)
# Modules written into the run's private python dir (.xt/py, first on PYTHONPATH and sys.path), so
# every process of the run - the cell, a script, its subprocesses and workers - records into the
# run: records go to a local spool file the runner tails into metrics.jsonl. Nothing secret and
# no URL is in the environment: only local paths.
SPOOL_SOURCE = '''"""Run records of any process of an xt_magic run (written by the xt_magic runner)."""
import json
import os
import time

CHECKPOINT_NAMES = ("dict_cp.json", "file.dat", "native.pkl")


def active():
    return bool(os.environ.get("XT_METRICS_SPOOL"))


def _jsonable(value):
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def record(kind, values=None, **fields):
    """Append one record; one write with O_APPEND, so processes never interleave."""
    path = os.environ.get("XT_METRICS_SPOOL")
    if not path:
        return False
    rec = {"kind": kind, "ts": time.time()}
    if values is not None:
        rec["values"] = {str(k): _jsonable(v) for k, v in dict(values).items()}
    rec.update({k: _jsonable(v) for k, v in fields.items() if v is not None})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(rec) + "\\n").encode())
    finally:
        os.close(fd)
    return True


def resuming():
    return bool(os.environ.get("XT_RESUME_NAME"))


def _ckpt(name):
    folder = os.environ.get("XT_CHECKPOINT_DIR")
    if not folder or name not in CHECKPOINT_NAMES:
        return None
    return os.path.join(folder, name)


def save(name, data):
    """Keep ``data`` as checkpoint ``name``; the runner uploads it to the run's store folder."""
    path = _ckpt(name)
    if path is None:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)  # made on first use, not by every run
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return record("checkpoint", name=name)


def load(name):
    path = _ckpt(name)
    if path is None or not os.path.isfile(path) or not os.path.getsize(path):
        return None
    with open(path, "rb") as fh:
        return fh.read()


def clear():
    for name in CHECKPOINT_NAMES:
        path = _ckpt(name)
        if path and os.path.exists(path):
            os.remove(path)
            record("checkpoint", name=name, cleared=True)


def save_object(obj):
    try:
        import cloudpickle as pickler
    except ImportError:
        import pickle as pickler
    return save("native.pkl", pickler.dumps(obj))


def load_object(default=None):
    data = load("native.pkl")
    if data is None:
        return default
    import pickle
    return pickle.loads(data)
'''

XTLIB_RUN_SOURCE = '''"""Stand-in for XT's ``xtlib.run`` (written by the xt_magic runner: xtlib is not installed).
Records go into the xt_magic run: metrics, hparams, events, tags and checkpoints."""
import json
import os

import _xt_spool


class _Store:
    """Stands for XT's store object: scripts test ``if run.store:`` before checkpointing."""

    def __bool__(self):
        return True

    def __getattr__(self, name):
        raise AttributeError("xtlib.run.Run().store.%s: XT's store API is not available under "
                             "xt_magic (use Run's methods, or files under $XT_OUTPUT_DIR)" % name)


class Run:
    def __init__(self, config=None, store=None, xt_logging=True, aml_logging=True,
                 checkpoints_enabled=True, *args, **kwargs):
        self.run_name = os.environ.get("XT_RUN_NAME")
        self.job_id = os.environ.get("XT_JOB_ID")
        self.ws_name = os.environ.get("XT_WORKSPACE_NAME")
        self.exper_name = os.environ.get("XT_EXPERIMENT_NAME")
        self.node_id = os.environ.get("XT_NODE_ID")
        self.resume_name = os.environ.get("XT_RESUME_NAME")
        self.config = config
        self.store = _Store() if self.run_name else None
        self.xt_logging = bool(xt_logging and self.run_name)  # XT: rank 0 logs, others pass False
        self.aml_logging = aml_logging
        self.checkpoints_enabled = bool(checkpoints_enabled and self.run_name)
        self.is_aml = False
        self.closed = False
        self.metric_report_count = 0

    def get_store(self):
        return self.store

    def log_hparam(self, name, value):
        self.log_hparams({name: value})

    def log_hparams(self, data_dict):
        if self.xt_logging:
            _xt_spool.record("hparams", data_dict)

    def log_metrics(self, data_dict, step_name=None, stage=None):
        if not self.xt_logging:
            return
        data = dict(data_dict)
        if step_name and step_name in data:
            step = data[step_name]
        else:  # as XT: one automatic counter for the run's reports
            self.metric_report_count += 1
            step = self.metric_report_count
        if stage:
            data = {(k if k == step_name else "%s-%s" % (stage, k)): v for k, v in data.items()}
        _xt_spool.record("metrics", data, step=step)

    def log_event(self, event_name, data_dict=None):
        if self.xt_logging:
            _xt_spool.record("event", data_dict or {}, name=event_name)

    def tag_run(self, tag_dict):
        _xt_spool.record("tags", tag_dict, scope="run")

    def tag_job(self, tag_dict):
        _xt_spool.record("tags", tag_dict, scope="job")

    def set_checkpoint(self, dict_cp, fn_cp=None):
        if not self.checkpoints_enabled:
            return False
        if fn_cp:
            with open(fn_cp, "rb") as fh:
                _xt_spool.save("file.dat", fh.read())
        _xt_spool.save("dict_cp.json", json.dumps(dict_cp).encode())
        return True

    def get_checkpoint(self, fn_cp_dest=None):
        """As XT: the checkpoint of the run this one resumes (None when not resuming)."""
        data = _xt_spool.load("dict_cp.json") if _xt_spool.resuming() else None
        if data is None or not self.checkpoints_enabled:
            return None
        if fn_cp_dest:
            blob = _xt_spool.load("file.dat")
            if blob is not None:
                folder = os.path.dirname(os.path.abspath(fn_cp_dest))
                os.makedirs(folder, exist_ok=True)  # as XT's download: the app's dir may not exist
                with open(fn_cp_dest, "wb") as fh:
                    fh.write(blob)
        return json.loads(data)

    def clear_checkpoint(self):
        if not self.checkpoints_enabled:
            return False
        _xt_spool.clear()
        return True

    def is_resuming(self):
        return _xt_spool.resuming()

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
'''

XTLIB_INIT_SOURCE = '''"""Stand-in for XT's xtlib (written by the xt_magic runner): run.Run and file_utils."""
__version__ = "0.0.0+xt_magic"
'''

XTLIB_FILE_UTILS_SOURCE = '''"""The parts of XT's xtlib.file_utils training scripts use (xt_magic runner stand-in)."""
import os


def ensure_dir_exists(dir=None, file=None):
    path = os.path.dirname(file) if file else dir
    if path:
        os.makedirs(path, exist_ok=True)


def read_text_file(fn):
    with open(fn) as fh:
        return fh.read()


def write_text_file(fn, text):
    ensure_dir_exists(file=fn)
    with open(fn, "w") as fh:
        fh.write(text)
'''

XT_MAGIC_STANDIN_SOURCE = '''"""Stand-in for xt_magic in a run (written by the xt_magic runner: xt_magic is not installed)."""
import _xt_spool

__xt_standin__ = True


def log(step=None, **metrics):
    _xt_spool.record("metrics", metrics, step=step)


def log_hparams(**hparams):
    _xt_spool.record("hparams", hparams)


def checkpoint(obj):
    _xt_spool.save_object(obj)


def restore(default=None):
    return _xt_spool.load_object(default)
'''

SPOOL_KINDS = ("metrics", "hparams", "event", "tags")
# A stored checkpoint: MAGIC, the hex HMAC (job key) of {run, name, sha256 of DATA}, newline, DATA.
# Only the runner (the job key holder) can make one that verifies: a store writer cannot plant a
# pickle a resumed run would load. Empty = cleared.
CHECKPOINT_MAGIC = b"XTCK1 "


def pack_checkpoint(key, run, name, data):
    sig = sign_fields(key, {"run": run, "name": name, "sha256": _sha256(data)})
    return CHECKPOINT_MAGIC + sig.encode() + b"\n" + data


def unpack_checkpoint(blob):
    """(sig, data) of a stored checkpoint; None when it is not one."""
    if not blob.startswith(CHECKPOINT_MAGIC) or b"\n" not in blob:
        return None
    head, data = blob[len(CHECKPOINT_MAGIC):].split(b"\n", 1)
    return head.decode("ascii", "replace"), data


_IMPORTABLE = {}  # name -> bool: asked twice per run; filled before the fork by ``warm``


def _importable(name):
    found = _IMPORTABLE.get(name)
    if found is None:  # a path search of every sys.path entry: ~0.2 ms each time
        found = _IMPORTABLE[name] = any(getattr(f, "find_spec", None) and f.find_spec(name, None)
                                        for f in sys.meta_path)
    return found


def warm(tickets=()):
    """For a process that forks runs of this module (the local supervisor), once before its first
    fork: what every run would otherwise pay for itself, and only that (each import here delays
    the first run: glob alone pulls in re and fnmatch, ~7 ms). Imports only modules (never a
    cell's code) and looks up which of xt_magic/xtlib this python has, as a run does first thing.
    ``tickets``: the runs' tickets, for what only some runs use (their cell outputs, their
    variables, after-dirs)."""
    import _signal, hashlib, hmac  # noqa: F401,E401  (the ticket's and the events' signatures)
    for name in ("xtlib", "xt_magic"):
        _importable(name)
    tickets = list(tickets)
    if any(t.get("capture") for t in tickets):
        import ast  # noqa: F401  (CellRun parses the cell for its last expression)
    if any(t.get("after") for t in tickets):
        import fnmatch, glob  # noqa: F401,E401  (after_files)
    if any(t.get("outputs") or (t.get("bundle") or {}).get("inputs") for t in tickets):
        try:
            import cloudpickle  # noqa: F401  (used when it is the bundle's version)
        except ImportError:
            pass  # each run imports the bundle's zip


def shared_pydir(files):
    """A directory holding ``files`` (name -> source), shared by every run that needs the same
    set: written once under ``$XT_HOME/py/<sha256>`` (a temporary dir renamed into place), not
    per run (each run paid ~8 ms writing the same stand-in modules)."""
    import hashlib
    digest = hashlib.sha256(canonical(files)).hexdigest()[:32]
    folder = os.path.join(xt_home(), "py", digest)
    if os.path.isdir(folder):
        return folder
    tmp = f"{folder}.tmp{os.getpid()}"
    for name, text in files.items():
        target = os.path.join(tmp, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as fh:
            fh.write(text)
    try:
        os.rename(tmp, folder)
    except OSError:  # another run put the same files there first
        _remove(tmp)
    return folder


class RunSpool:
    """The run's local spool (tailed into metrics.jsonl), checkpoint dir and python dir."""

    def __init__(self, io, ticket, workdir, metrics, key):
        self.io, self.ticket, self.metrics, self.key = io, ticket, metrics, key
        base = os.path.join(os.path.abspath(workdir), ".xt")
        self.path = os.path.join(base, "spool.jsonl")
        self.ckpt_dir = os.path.join(base, "checkpoint")
        self.pydir = os.path.join(base, "py")
        self.offset, self.partial = 0, b""
        ck = ticket.get("checkpoint") or {}
        self.ck_write, self.ck_read = ck.get("write") or {}, ck.get("read") or {}
        # another run's checkpoint (%xt_rerun --resume): the kernel checked its signature and
        # signed the sha256 of its data into this ticket
        self.ck_sha = ck.get("sha256") or {}

    def install(self, ran_before=True):
        """Write the modules, fetch a checkpoint to resume from (the resumed run's, or this run's
        own when an earlier attempt of it started); returns the run's env additions."""
        try:  # checkpoint/ is made only when a checkpoint is fetched or saved
            os.mkdir(os.path.dirname(self.path))
        except FileExistsError:
            pass  # a ticket's own work dir, used before
        files = {"_xt_spool.py": SPOOL_SOURCE}
        if not _importable("xtlib"):
            files.update({"xtlib/__init__.py": XTLIB_INIT_SOURCE, "xtlib/run.py": XTLIB_RUN_SOURCE,
                          "xtlib/file_utils.py": XTLIB_FILE_UTILS_SOURCE})
        if not _importable("xt_magic"):
            files["xt_magic/__init__.py"] = XT_MAGIC_STANDIN_SOURCE
        self.pydir = shared_pydir(files)  # the spool file: made by the first record (O_CREAT)
        resuming = bool(self.ticket.get("resume"))
        for name, path in self.ck_read.items():
            if not (ran_before or name in self.ck_sha):
                continue  # a first attempt has no checkpoint of its own: no request for it
            try:
                data = self.checked_checkpoint(name, self.io.get(path))
            except RunnerError:
                continue  # no checkpoint of that kind
            if data and "/" not in name:
                os.makedirs(self.ckpt_dir, exist_ok=True)
                with open(os.path.join(self.ckpt_dir, name), "wb") as fh:
                    fh.write(data)
                resuming = True
        py = os.environ.get("PYTHONPATH")
        env = {"XT_METRICS_SPOOL": self.path, "XT_CHECKPOINT_DIR": self.ckpt_dir,
               "PYTHONPATH": self.pydir + (os.pathsep + py if py else "")}
        if resuming:  # XT's name: the run whose checkpoint this one starts from
            env["XT_RESUME_NAME"] = str(self.ticket.get("resume") or self.ticket["run"])
        else:
            os.environ.pop("XT_RESUME_NAME", None)
        return env

    def checked_checkpoint(self, name, blob):
        """The data of a stored checkpoint, or None (none, cleared, or not verifying: noted)."""
        unpacked = unpack_checkpoint(blob) if blob else None
        if unpacked is None:
            if blob:
                sys.stderr.write(f"[xt] checkpoint {name} is not one this job wrote: ignored\n")
            return None
        sig, data = unpacked
        if name in self.ck_sha:
            ok = _sha256(data) == self.ck_sha[name]
        else:
            ok = verify_fields(self.key, {"run": self.ticket["run"], "name": name,
                                          "sha256": _sha256(data), "sig": sig})
        if not ok:
            sys.stderr.write(f"[xt] checkpoint {name} does not verify: ignored\n")
            return None
        return data

    def tick(self):
        """Move complete new spool lines into the metrics buffer; upload changed checkpoints."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        if not data:
            return
        self.offset += len(data)
        data, self.partial = self.partial + data, b""
        lines = data.split(b"\n")
        self.partial = lines.pop()  # a line still being written
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            if rec.get("kind") == "checkpoint":
                self._upload(rec.get("name"), rec.get("cleared"))
            elif rec.get("kind") in SPOOL_KINDS:
                self.metrics.pending.append(rec)

    def _upload(self, name, cleared):
        path = self.ck_write.get(name)
        if not path:
            return
        blob = b""  # empty = cleared
        if not cleared:
            try:
                with open(os.path.join(self.ckpt_dir, name), "rb") as fh:
                    blob = pack_checkpoint(self.key, self.ticket["run"], name, fh.read())
            except OSError:
                return
        self.io.put(path, blob)


def _node_rank():
    """A multi-node run's rank (Batch: the rank ticket's XT_RANK, the node's NODE_RANK)."""
    for name in ("XT_RANK", "NODE_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def xt_environ(ticket, workdir, outdir, spool_env):
    """XT's run environment (docs/xt-users.md), plus the spool's local paths."""
    env = {"XT_RUN_NAME": ticket["run"], "XT_RUN_ID": ticket["run"], "XT_JOB_ID": ticket["job"],
           "XT_WORKSPACE_NAME": str(ticket.get("workspace") or ""),
           "XT_EXPERIMENT_NAME": str(ticket.get("experiment") or ""),
           "XT_NODE_ID": "node%d" % _node_rank(),
           "XT_OUTPUT_DIR": outdir}
    env.update(spool_env)
    return env


def fetch_shares(io, ticket, workdir, console):
    """data/model ``download``: copy the listed store files under the work dir; their dirs' env."""
    env = {}
    for key, var in (("data", "XT_DATA_DIR"), ("model", "XT_MODEL_DIR")):
        spec = ticket.get(key)
        if not spec:
            continue
        dest = os.path.join(os.path.abspath(workdir), spec.get("dir") or f"xt-{key}")
        os.makedirs(dest, exist_ok=True)
        for rel, path in sorted((spec.get("files") or {}).items()):
            parts = _check_path(rel)
            full = os.path.join(dest, *parts)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as fh:
                fh.write(io.get(path))
        console.say(f"[xt] {key}: {len(spec.get('files') or {})} file(s) from the store in {dest}")
        env[var] = dest
    return env


def after_files(workdir, outdir, spec):
    """(archive name, file) of the after-files.after-dirs matches outside the output dir."""
    import fnmatch
    import glob
    if not spec:
        return []
    workdir, outdir = os.path.abspath(workdir), os.path.abspath(outdir)
    omit = list(spec.get("omit") or [])
    found = {}
    for pattern in spec.get("dirs") or []:
        pattern = str(pattern)
        if pattern.endswith("/**"):
            pattern += "/*"
        for full in glob.glob(os.path.join(workdir, pattern), recursive=True):
            rel = os.path.relpath(full, workdir).replace(os.sep, "/")
            inside_out = full == outdir or full.startswith(outdir + os.sep)
            if (not os.path.isfile(full) or os.path.islink(full) or inside_out
                    or rel.startswith(("..", ".xt/"))
                    or any(fnmatch.fnmatch(part, o) or fnmatch.fnmatch(rel, o)
                           for o in omit for part in rel.split("/"))):
                continue
            found[rel] = full
    return sorted(found.items())


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def run_commands(ticket, workdir):
    """Run the ticket's commands in order (each in its own process group); a dict with ``error``
    and ``exit_code`` when one fails, else an empty dict. Cancel kills the group."""
    import signal
    import subprocess
    for cmd in ticket.get("commands") or []:
        argv = [str(a) for a in cmd.get("argv") or []]
        if cmd.get("python"):
            argv = [sys.executable, *argv]
        shown = " ".join(argv[1:] if cmd.get("python") else argv)
        sys.stdout.write(f"[xt] running: {'python ' if cmd.get('python') else ''}{shown}\n")
        sys.stdout.flush()
        try:
            proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as err:
            return {"exit_code": 127, "error": {
                "type": type(err).__name__, "message": f"cannot start {argv[0]!r}: {err.strerror}",
                "traceback": f"cannot start {argv[0]!r}: {err}\n"}}
        try:
            rc = proc.wait()
        except BaseException:  # cancelled (SIGTERM) or interrupted: the command goes too
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        if rc:
            how = (f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}")
            message = f"{shown} {how}"
            return {"exit_code": rc if rc > 0 else 128 - rc,
                    "error": {"type": "CommandFailed", "message": message,
                              "traceback": message + "\n"}}
    return {}


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: python runner.py TICKET.json\n")
        return EXIT_UNREPORTED
    setup_only = "--setup-only" in argv  # batch job preparation: build the env once per node
    argv = [a for a in argv if a != "--setup-only"]
    ticket_path = argv[1]
    try:  # first of all: nothing started from here on (setup, activate, the cell) sees it
        launch = take_launch()
    except Exception as err:
        sys.stderr.write(f"xt runner: unusable launch secret: {type(err).__name__}\n")
        return EXIT_UNREPORTED
    if launch is None:
        sys.stderr.write("xt runner: no launch secret (XT_LAUNCH / XT_LAUNCH_FILE)\n")
        return EXIT_UNREPORTED
    # a node's own environment (an SSH login's, a Batch node's) is allowlisted like the kernel's:
    # the run adds only what its ticket names (general.env-vars, --env)
    kept = allowed_environ(os.environ)
    for name in [k for k in os.environ if k not in kept]:  # not clear(): one unsetenv each
        del os.environ[name]
    try:
        with open(ticket_path, "rb") as fh:
            ticket = json.load(fh)
        io = make_io(launch["access"])
        console = Console(io, ticket["paths"]["console"], mirror_fd=None)
    except Exception as err:  # nowhere to report to
        sys.stderr.write(f"xt runner: unusable ticket {ticket_path}: {type(err).__name__}: {err}\n")
        return EXIT_UNREPORTED
    key = launch["key"]
    if not verify_fields(key, ticket):
        # a ticket not made with this job's key: trust none of its paths, hashes or settings
        try:
            append_event(io, ticket, "failed", key, exit_code=EXIT_FAILED,
                         reason="ticket signature does not verify")
        except Exception:
            pass
        sys.stderr.write("xt runner: ticket signature does not verify\n")
        return EXIT_FAILED
    if isinstance(io, UrlIO):
        io.fresh.update(ticket["paths"][k] for k in ("console", "metrics", "outputs")
                        if ticket["paths"].get(k))
    if setup_only:
        setup = ticket.get("setup") or {}
        if setup.get("pip-packages") or setup.get("conda-packages"):
            realise_env(setup, console)
        console.tick(force=True)
        return EXIT_OK
    try:
        if "--phase2" not in argv and ticket.get("setup"):
            setup_phase(ticket, ticket_path, console, launch)
        return run_phase(ticket, io, console, key)
    except Cancelled:
        return EXIT_CANCELLED
    except BaseException as err:
        import traceback
        message = str(err) if isinstance(err, RunnerError) else f"{type(err).__name__}: {err}"
        try:
            console.say(f"[xt] run failed: {message}")
            console.tick(force=True)
            append_event(io, ticket, "failed", key, exit_code=EXIT_FAILED, reason=message[:500],
                         error={"type": type(err).__name__, "message": str(err),
                                "traceback": traceback.format_exc()})
        except BaseException as report_err:
            sys.stderr.write(f"xt runner: {message}\n")
            if _no_space(err) or _no_space(report_err):
                sys.stderr.write("xt runner: no space left on device (ENOSPC)\n")
                return EXIT_NO_SPACE
            return EXIT_UNREPORTED
        return EXIT_FAILED


def _no_space(err):
    """Whether ``err`` (or what caused it) is a full disk."""
    import errno
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv))
