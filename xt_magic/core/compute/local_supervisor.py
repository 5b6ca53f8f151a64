"""Detached supervisor of one job on one box: the local target's, and a pool box's agent.

Standard library only; one program for both (a pool delivers this very file to each box over
SFTP, content addressed, next to the job's spec)::

    python local_supervisor.py JOBDIR [LOCK_FD]       supervise (what --start spawns; LOCK_FD:
                                                      supervisor.lock, already locked for it)
    python local_supervisor.py --start [--agents DIR IDLE] JOBDIR...
                                                      start a detached supervisor for each JOBDIR
                                                      whose supervisor is not alive (through the
                                                      box agent under DIR); prints one JSON line
                                                      per JOBDIR: alive|started|missing
    python local_supervisor.py --agent DIR IDLE JOBDIR LOCK_FD
                                                      the box agent (``agent``): supervises JOBDIR
                                                      (a fork), then forks the supervisor of each
                                                      job handed to it until IDLE s pass unused
    python local_supervisor.py --cancel JOBDIR RUN... mark runs cancelled (a queued run never
                                                      starts), kill running ones' process groups

One per job and box (never one process per waiting run): it starts the job's runs
as box slots free up (a fork of itself running runner.main when the run uses this interpreter, so
a run costs no interpreter start-up; a spawned ``python -c BOOTSTRAP`` otherwise), reaps them,
records their exit status, enforces max-seconds, and reports a run that died without a final
event as ``failed`` with the reason. It survives the kernel exiting (own session), and holds ``JOBDIR/supervisor.lock``
for its whole life, which is how other processes tell whether it is alive. Whoever starts it takes
that lock first and hands it over (LOCK_FD), so two supervisors never run one job; it is started
through ``sh ... &`` (double fork), so it is never a child its starter would have to reap.

Box slots are ``SLOTS/slot{i}.lock`` files (i < max-runs) shared by every job and kernel using the
box: the supervisor holds a run's slot (``flock``) and frees it when the run's process ends, whatever
the run's own children still do; the run never holds the descriptor. An adopted run (below) gets a
slot too while one is free. Each time a run ends the supervisor also removes the private work dirs
of runs that are gone (a killed run leaves its own behind).

JOBDIR layout (written by LocalBackend.submit, or by PoolBackend.submit over SFTP)::

    job.json               {"launches": [{"run", "ticket", "ticket_file", "max_seconds", "launch"}],
                            "python", "runner", "slots", "max_runs", "grace", "token", "runs_dir"}
                           (0600 in a 0700 dir: "launch" is the run's launch secret, handed to
                           the runner in its environment as XT_LAUNCH, never on a command line).
                           "python": null = this interpreter (runs are forks of the supervisor),
                           else an argv (or one path) to spawn; "max_runs": null = the cores;
                           "runs_dir": where run dirs go (default JOBDIR/runs)
    lock                   job lock: start-vs-cancel decisions are taken under it
    supervisor.lock        held by the live supervisor
    supervisor             "pid pstart" of the latest supervisor
    started                made by the first --start: stale run files were cleared then
    waiters/{pid}-{rand}   a waiting kernel's FIFO (``Waiter``): a byte is written to each as a
                           run ends (``notify``)
    RUNS/{run}/pid         "pid pstart" of the runner (its process group id is pid)
    RUNS/{run}/exit        exit code (negative: killed by that signal)
    RUNS/{run}/reported    its end was reported (a restarted supervisor does not report it again)
    RUNS/{run}/cancel      marker: cancelled, never start it / report nothing on its exit
    RUNS/{run}/timeout     marker: killed for its time limit (already reported)
    RUNS/{run}/runner.log  the runner's own stdout/stderr

A supervisor started again (its predecessor was killed) adopts the runs still alive (they run in
their own sessions; their exits are polled, and a limit still applies), reports those that died
meanwhile, and starts those never started.
"""
import errno
import fcntl
import gc
import json
import os
import select
import signal
import socket
import sys
import time


def try_lock(path):
    """An fd holding an exclusive flock on ``path``, or None if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class JobLock:
    def __init__(self, jobdir):
        self.path = os.path.join(jobdir, "lock")

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        os.close(self.fd)


def exit_reason(code):
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 2:
        return "the runner could not report its result (exit code 2); see runner.log"
    if code == 3:  # runner.EXIT_NO_SPACE
        return "no space left on device (ENOSPC): the runner could not write its result"
    return f"exited with code {code} without reporting a result"


def load_runner(runner_path):
    """The runner module (stdlib only): its io code writes our events, its command starts runs."""
    folder = os.path.dirname(runner_path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import runner
    return runner


_LOADED = {}  # sha256 of the imported runner's source, taken when an agent imported it


def _remember_runner():
    """Record the imported runner's source hash (an agent compares each job's runner with it)."""
    _LOADED["sha"] = _source_sha(sys.modules["runner"].__file__)


def _source_sha(path):
    import hashlib
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _runner_loaded(runner_path):
    """Whether the runner imported here (if any) is ``runner_path``'s: the same file, or (a pool
    stages one per run dir) the same source."""
    loaded = sys.modules.get("runner")
    if loaded is None:
        return True
    if os.path.abspath(loaded.__file__) == os.path.abspath(runner_path):
        return True
    try:
        return _LOADED.get("sha") == _source_sha(runner_path)
    except OSError:
        return False


def report(runner_path, launch, state, **fields):
    """Append an event through the run's node access (the runner's own code does the writing)."""
    runner = load_runner(runner_path)
    io = runner.make_io(launch["launch"]["access"])
    runner.append_event(io, launch["ticket"], state, **fields)


def final_reported(runner, launch):
    """Whether the run's events already hold a final state (file access only; None if unknown:
    URL access may append to the events but not read them)."""
    access = launch["launch"]["access"]
    if access.get("kind") != "file":
        return None
    io = runner.make_io(access)
    try:
        data = io.get(launch["ticket"]["paths"]["events"])
    except runner.RunnerError:
        return None
    return any(e.get("state") in runner.FINAL_STATES for e in runner.parse_events(data))


def run_dir(jobdir, spec, run):
    return os.path.join(spec.get("runs_dir") or os.path.join(jobdir, "runs"), run)


def handle_exit(jobdir, spec, launch, code):
    """Record a reaped run's exit code and report it if the runner did not (``code`` None: the
    run was not our child, so its exit status is unknown). False if that could not be written (a
    full disk): the caller tries again later."""
    runner = load_runner(spec["runner"])
    try:
        _handle_exit(runner, jobdir, spec, launch, code)
    except (OSError, runner.RunnerError) as err:
        sys.stderr.write(f"xt supervisor: reporting {launch['run']} failed ({err}); will retry\n")
        return False
    return True


def _handle_exit(runner, jobdir, spec, launch, code):
    rundir = run_dir(jobdir, spec, launch["run"])
    if code is not None:
        runner.write_atomic(os.path.join(rundir, "exit"), str(code))
    if any(os.path.exists(os.path.join(rundir, m)) for m in ("cancel", "timeout", "reported")):
        return
    # the events are read only when the exit code leaves it open (a full disk's may not be)
    if code is None:
        if final_reported(runner, launch) is not True:
            report(spec["runner"], launch, "failed", reason="process gone without a result "
                   "(exit status unknown: its supervisor was gone too)")
    elif code not in (0, 1) or final_reported(runner, launch) is False:
        report(spec["runner"], launch, "failed", exit_code=code, reason=exit_reason(code),
               signal=signal.Signals(-code).name
               if code < 0 and -code in signal.valid_signals() else None)
    else:
        return  # the runner reported its own end; its exit file says it was handled
    runner.write_atomic(os.path.join(rundir, "reported"), "")


# fds the supervisor holds that a forked run must not keep (supervisor.lock, wakeup pipe, the box's
# slot files)
_PRIVATE_FDS = []


def start_run(jobdir, spec, launch):
    """Start the runner; None if the run was cancelled meanwhile.

    When the run uses this interpreter, the runner is a fork of this (already started, site
    loaded) process: no interpreter start-up per run. Otherwise it is spawned."""
    run = launch["run"]
    rundir = run_dir(jobdir, spec, run)
    os.makedirs(rundir, exist_ok=True)
    runner = load_runner(spec["runner"])
    ticket_file = launch.get("ticket_file")
    if not ticket_file or not os.path.exists(ticket_file):
        ticket_file = os.path.join(rundir, "ticket.json")
        runner.write_atomic(ticket_file, json.dumps(launch["ticket"]))
    argv = _argv(spec)
    secret = json.dumps(launch["launch"])
    log = os.path.join(rundir, "runner.log")
    lock = JobLock(jobdir)
    with lock:
        if os.path.exists(os.path.join(rundir, "cancel")) or os.path.exists(
                os.path.join(rundir, "pid")):
            return None
        if argv == [sys.executable] or (len(argv) == 1 and os.path.abspath(argv[0]) == os.path.abspath(
                sys.executable)):  # not realpath: venvs
            gc.freeze()  # a run's collections never walk (and so copy) our objects: the spec
            pid = os.fork()
            if pid == 0:
                _run_in_child(runner, ticket_file, log, [lock.fd] + _PRIVATE_FDS, rundir, secret)
            return pid  # it records its pid itself (_run_in_child)
        else:
            # the runner takes it out of its environment before anything else runs; our own fds
            # (slots included) are all close-on-exec
            env = dict(os.environ, XT_LAUNCH=secret)
            cmd = runner.command(argv[0], ticket_file)
            cmd[1:1] = argv[1:]
            pid = os.posix_spawnp(argv[0], cmd, env, setsid=True,
                                  file_actions=[
                                      (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                      (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT
                                       | os.O_APPEND, 0o644),
                                      (os.POSIX_SPAWN_DUP2, 1, 2)])
        runner.write_atomic(os.path.join(rundir, "pid"), f"{pid} {runner.proc_start(pid)}")
    return pid


#: how long a supervisor keeps retrying reports it cannot write (a full disk) before it gives up
REPORT_RETRY_SECONDS = 3600


def warm_template(runner, spec, every=False):
    """Import what the forked runs need before the first fork, once per supervisor
    (``runner.warm``: e.g. cloudpickle only for runs that move variables; each import here delays
    the first run). Only modules are loaded, never a run's code, so the template every run is
    forked from stays clean. ``every``: for any run (an idle agent, warming for jobs to come)."""
    tickets = [launch["ticket"] for launch in spec.get("launches") or ()]
    if every:
        tickets.append({"capture": True, "after": True, "outputs": True})
    runner.warm(tickets)


def _argv(spec):
    python = spec.get("python") or sys.executable
    return python if isinstance(python, list) else [python]


def _run_in_child(runner, ticket_file, log, private_fds, rundir, secret):
    """The forked child: become a clean runner process, run, exit (never returns)."""
    code = 2
    try:
        # recorded before the run can write "running", even if the supervisor dies right now;
        # then the cancel marker is looked for: ``mark_cancelled`` writes it before it reads
        # the pid, so a cancel either finds this pid or is seen here
        runner.write_atomic(os.path.join(rundir, "pid"),
                            f"{os.getpid()} {runner.proc_start(os.getpid())}")
        if os.path.exists(os.path.join(rundir, "cancel")):
            code = 0
            return
        for fd in private_fds:  # else the run (and what it forks) would hold our locks and slots
            os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        _redirect(log, 0o644)
        os.environ["XT_LAUNCH"] = secret  # runner.main takes it out again first thing
        if "random" in sys.modules:  # never share a random state between forked runs
            sys.modules["random"].seed()
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        sys.argv = [runner.__file__, ticket_file]
        code = runner.main(sys.argv)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        try:  # what interpreter exit would do: join threads, atexit, flush
            if "threading" in sys.modules:
                sys.modules["threading"]._shutdown()
            import atexit
            atexit._run_exitfuncs()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        finally:
            os._exit(code)


def _redirect(log, mode):
    """A forked child's stdin from /dev/null, stdout and stderr appended to ``log``."""
    null = os.open("/dev/null", os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


class Slots:
    """The box's ``SLOTS/slot{i}.lock`` files, each opened once (a forked run closes them all:
    _PRIVATE_FDS) and flock-ed while this supervisor holds that slot for a run."""

    def __init__(self, folder, count):
        self.folder, self.count = folder, max(1, int(count or os.cpu_count() or 1))
        os.makedirs(folder, exist_ok=True)
        self.free, self.held = [], set()

    def acquire(self):
        """A free slot's fd, now locked, or None."""
        if not self.free and not self.held:
            for i in range(self.count):
                fd = os.open(os.path.join(self.folder, f"slot{i}.lock"),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                _PRIVATE_FDS.append(fd)
                self.free.append(fd)
        for fd in self.free:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another job's or kernel's
            self.free.remove(fd)
            self.held.add(fd)
            return fd
        return None

    def release(self, fd):
        if fd in self.held:
            fcntl.flock(fd, fcntl.LOCK_UN)
            self.held.discard(fd)
            self.free.append(fd)


def supervise(jobdir, lock_fd=None, spec=None):
    if lock_fd is not None:  # handed over by whoever started us, already locked
        me = lock_fd
        fcntl.flock(me, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: a no-op that checks it
        os.set_inheritable(me, False)
    else:
        me = try_lock(os.path.join(jobdir, "supervisor.lock"))
        if me is None:
            return 0  # another supervisor already runs this job
    _PRIVATE_FDS.append(me)
    spec = spec or load_spec(jobdir)
    runner = load_runner(spec["runner"])
    runner.write_atomic(os.path.join(jobdir, "supervisor"),
                        f"{os.getpid()} {runner.proc_start(os.getpid())}")
    warm_template(runner, spec)
    slots = Slots(spec["slots"], spec.get("max_runs"))
    grace = float(spec.get("grace", 5))
    pending = []
    running = {}  # pid -> [launch, started, kill_at, slot fd]
    adopted = {}  # pid -> [launch, started, kill_at, slot fd]: runs of a supervisor that died
    adopted_start = {}  # pid -> its start time (a reused pid is not the run)
    unreported = []  # (launch, code) whose report could not be written (a full disk): retried
    known = set()  # runs of job.json looked at (a search adds runs to a live job)

    def add_new(spec):
        new = []
        for launch in spec["launches"]:
            if launch["run"] in known:
                continue
            known.add(launch["run"])
            rundir = run_dir(jobdir, spec, launch["run"])
            if os.path.exists(os.path.join(rundir, "cancel")):
                continue
            pid, pstart = read_pid(rundir)
            if pid is None:
                if not final_reported(runner, launch):  # e.g. failed after an interrupted submit
                    new.append(launch)
            elif os.path.exists(os.path.join(rundir, "exit")):  # reaped, maybe not reported
                if not handle_exit(jobdir, spec, launch, None):
                    unreported.append((launch, None))
            elif runner.proc_alive(pid, pstart):
                age = time.time() - os.stat(os.path.join(rundir, "pid")).st_mtime
                adopted[pid] = [launch, time.monotonic() - age, None, slots.acquire()]
                adopted_start[pid] = pstart
            elif not handle_exit(jobdir, spec, launch, None):
                unreported.append((launch, None))
        pending[:0] = reversed(new)  # pop() from the end keeps submission order
    add_new(spec)

    def start_pending():
        """Start pending runs while a box slot is free; whether any was started."""
        started = False
        while pending:
            fd = slots.acquire()
            if fd is None:
                break
            launch = pending.pop()
            try:
                pid = start_run(jobdir, spec, launch)
            except OSError as err:
                pid = None
                report(spec["runner"], launch, "failed",
                       reason=f"could not start the runner: {err}")
            if pid:
                running[pid] = [launch, time.monotonic(), None, fd]
                started = True
            else:
                slots.release(fd)
        return started
    seen = None  # re-read under the job lock on the first pass: runs may have been added
    wait = 0.05   # slot poll period while blocked; backs off so many waiting jobs stay cheap
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _PRIVATE_FDS.extend((rfd, wfd))
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a cancel kills runs, never the supervisor

    while True:
        if not os.path.exists(os.path.join(jobdir, "job.json")) or (
                unreported and time.monotonic() > report_deadline):
            # the job's record was deleted (a poll fails its runs), or a report could not be
            # written for REPORT_RETRY_SECONDS: nothing more to do here; never linger forever
            for pid in [*running, *adopted]:
                _killpg(pid, signal.SIGKILL)
            return 0
        if not unreported:
            report_deadline = time.monotonic() + REPORT_RETRY_SECONDS
        if not (pending or running or adopted or unreported):
            # a last look under the job lock (the lock LocalBackend._add writes under): runs
            # added now are started; otherwise supervisor.lock is released before the job lock,
            # so an adder that gets the job lock next sees no supervisor and starts one
            lock = JobLock(jobdir)
            lock.__enter__()
            spec = load_spec(jobdir)
            add_new(spec)
            if not (pending or adopted):
                os.close(me)
                return 0
            lock.__exit__()
        if _stat(jobdir) != seen:  # runs added to the job (a search makes them as it goes)
            try:
                with JobLock(jobdir):
                    seen = _stat(jobdir)
                    spec = load_spec(jobdir)
                    add_new(spec)
            except FileNotFoundError:
                continue  # the job's record was deleted just now: the check above stops us
        if start_pending():
            wait = 0.05
        ended = []
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            entry = running.pop(pid, None)
            if entry:
                slots.release(entry[3])  # its process ended: its slot is free, whatever it forked
                ended.append((entry[0], os.waitstatus_to_exitcode(status)))
        for pid, entry in list(adopted.items()):
            if not runner.proc_alive(pid, adopted_start[pid]):
                del adopted[pid]
                slots.release(entry[3])
                ended.append((entry[0], None))
        if ended:
            start_pending()  # their slots are free: the next runs first, the bookkeeping after
        if any(code not in (0, 1) for _, code in ended):
            runner.sweep_workdirs()  # what killed runs left behind (a run removes its own)
        unreported = [(launch, code) for launch, code in unreported + ended
                      if not handle_exit(jobdir, spec, launch, code)]
        if ended:  # each end is in the store now (the runner's event, or our report)
            notify(jobdir)
        now = time.monotonic()
        for pid, entry in [*running.items(), *adopted.items()]:
            launch, started, kill_at, _ = entry
            limit = launch.get("max_seconds")
            if kill_at is None and limit and now - started > float(limit):
                rundir = run_dir(jobdir, spec, launch["run"])
                runner.write_atomic(os.path.join(rundir, "timeout"), str(limit))
                _killpg(pid, signal.SIGTERM)
                report(spec["runner"], launch, "failed", reason="time limit",
                       max_seconds=limit)
                entry[2] = now + grace
            elif kill_at is not None and now > kill_at:
                _killpg(pid, signal.SIGKILL)
                entry[2] = now + 3600
        if pending and ended:
            continue  # a slot may have freed meanwhile
        if pending:  # our own runs' exits wake us at once (SIGCHLD); other jobs' are polled
            wait = min(wait * 1.5, 0.5)
        try:
            if select.select([rfd], [], [], wait if pending else (1.0 if unreported else 0.5))[0]:
                os.read(rfd, 4096)
                wait = 0.05
        except (BlockingIOError, InterruptedError):
            pass
    return 0


def notify(jobdir):
    """Wake every process waiting on this job: each holds a FIFO in JOBDIR/waiters open
    (``Waiter``); one byte makes its select() return. A FIFO nobody holds (its kernel died) is
    removed."""
    folder = os.path.join(jobdir, "waiters")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith("."):
            continue  # still being set up by its waiter
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ENXIO:  # no reader: its waiter is gone
                _unlink(path)
            continue
        try:
            os.write(fd, b"!")
        except OSError:
            pass  # EAGAIN: bytes it has not read yet will wake it anyway
        finally:
            os.close(fd)


class Waiter:
    """A kernel's wake-up from the job's supervisor: a FIFO of its own in JOBDIR/waiters, held
    open read-write (so it never reads end-of-file when no writer has it open) and named only
    once open (so ``notify`` never takes it for a dead waiter's). ``wait(timeout)`` blocks in
    select(), costing nothing while nothing happens, and returns True when woken."""

    def __init__(self, jobdir):
        folder = os.path.join(jobdir, "waiters")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{os.urandom(6).hex()}"
        tmp = os.path.join(folder, "." + name)
        os.mkfifo(tmp, 0o600)
        try:
            self.fd = os.open(tmp, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self.path = os.path.join(folder, name)
            os.rename(tmp, self.path)
        except OSError:
            _unlink(tmp)
            raise

    def wait(self, timeout):
        try:
            ready = select.select([self.fd], [], [], max(0.0, timeout))[0]
        except InterruptedError:
            return False
        if ready:
            try:
                while os.read(self.fd, 4096):
                    pass
            except BlockingIOError:
                pass
        return bool(ready)

    def close(self):
        if self.fd is not None:
            _unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _stat(jobdir):
    try:
        st = os.stat(os.path.join(jobdir, "job.json"))
        return st.st_mtime_ns, st.st_size, st.st_ino
    except OSError:
        return None


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def read_pid(rundir):
    """(pid, pstart) from a run's ``pid`` file; (None, None) when it has none."""
    try:
        with open(os.path.join(rundir, "pid")) as fh:
            parts = fh.read().split()
        return int(parts[0]), (int(parts[1]) if len(parts) > 1 and parts[1] != "None" else None)
    except (OSError, ValueError, IndexError):
        return None, None


def load_spec(jobdir):
    with open(os.path.join(jobdir, "job.json")) as fh:
        return json.load(fh)


def alive(jobdir):
    """Whether a supervisor of ``jobdir`` runs (it holds supervisor.lock)."""
    fd = try_lock(os.path.join(jobdir, "supervisor.lock"))
    if fd is None:
        return True
    os.close(fd)
    return False


def detach(argv, env, log, keep_fd=None):
    """Start ``argv`` detached (own session, stdin /dev/null, output appended to ``log``) through
    ``sh -c '"$@" &'`` (a double fork): it is never our child, so nothing is left to reap (a
    kernel that spawned its supervisors directly kept a zombie per job). ``keep_fd`` is
    inherited by it."""
    if keep_fd is not None:
        os.set_inheritable(keep_fd, True)
    try:
        pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", '"$@" &', "sh", *argv], env,
                             setsid=True, file_actions=[
                                 (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                 (os.POSIX_SPAWN_OPEN, 1, log,
                                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                                 (os.POSIX_SPAWN_DUP2, 1, 2)])
        try:
            os.waitpid(pid, 0)  # sh exits as soon as the program is started
        except ChildProcessError:
            pass  # SIGCHLD ignored here: already reaped
    finally:
        if keep_fd is not None:
            os.set_inheritable(keep_fd, False)


def spawn(jobdir, python=None, env=None, lock_fd=None, agents=None, idle=0):
    """Start a supervisor of ``jobdir`` so it outlives the kernel or SSH session that started it.
    False if one is alive.

    With ``agents`` (a private dir) and ``idle`` > 0, the supervisor is a fork of the box's agent
    for this interpreter and environment (``agent``): no Python start-up, the runner and
    cloudpickle already imported. With no live agent, one is started (``detach``) with this job
    as its first, and stays ``idle`` seconds after its last job ends.

    Race-free: ``lock_fd`` (the caller's flock on supervisor.lock, else taken here) is handed to
    the new supervisor, so the lock is never free between "none runs" and "one runs"."""
    fd = lock_fd if lock_fd is not None else try_lock(os.path.join(jobdir, "supervisor.lock"))
    if fd is None:
        return False
    try:
        python = python or sys.executable
        env = os.environ if env is None else env
        # with site (not -I -S): it forks the runs, which need the interpreter's full sys.path
        argv = [python, os.path.abspath(__file__), jobdir, str(fd)]
        if agents and idle:
            folder = agent_folder(agents, python, env)
            if hand_to_agent(folder, jobdir, fd):
                return True
            argv[2:2] = ["--agent", folder, str(idle)]
        detach(argv, env, os.path.join(jobdir, "supervisor.log"), fd)
    finally:
        if lock_fd is None:
            os.close(fd)
    return True


def start(jobdir, agents=None, idle=0):
    """``--start``: a supervisor for ``jobdir`` unless one is alive. The first start clears what
    an earlier job with the same run ids left in the run dirs (a shared RUNS dir on a box)."""
    if not os.path.exists(os.path.join(jobdir, "job.json")):
        return "missing"
    lock = try_lock(os.path.join(jobdir, "supervisor.lock"))
    if lock is None:
        return "alive"
    with JobLock(jobdir):
        marker = os.path.join(jobdir, "started")
        if not os.path.exists(marker):
            spec = load_spec(jobdir)
            for launch in spec["launches"]:
                rundir = run_dir(jobdir, spec, launch["run"])
                for name in ("pid", "exit", "reported", "cancel", "timeout"):
                    try:
                        os.unlink(os.path.join(rundir, name))
                    except FileNotFoundError:
                        pass
            open(marker, "w").close()
    try:
        spawn(jobdir, lock_fd=lock, agents=agents, idle=idle)
    finally:
        os.close(lock)
    return "started"


# ----------------------------------------------------------------------------------- box agent
# A job's supervisor started cold costs a Python start-up, the runner's import and cloudpickle's
# (~40 ms) before its first run. The agent is a process that paid them once and forks each new
# job's supervisor: it runs no job code itself (a fork per job, and a fork per run below that, so
# every run still starts from this clean state). One per interpreter, supervisor program, working
# dir and environment: its forks get exactly what a cold start would. It listens on AGENT/sock in
# a private dir (and checks the peer is this user); a job's supervisor.lock fd is passed over it,
# so the hand-over keeps the lock held throughout.

#: variables that differ per login session and that nothing here or in a run uses (the runner
#: drops them): left out of an agent's key, so every SSH connection to a box shares one agent
SESSION_ONLY = frozenset({"SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "SHLVL", "_", "OLDPWD"})


def agent_folder(agents, python, env):
    """The agent dir for supervisors of this interpreter, program, working dir and environment."""
    import hashlib
    here = os.path.abspath(__file__)
    st = os.stat(here)
    ident = json.dumps([python, here, st.st_mtime_ns, st.st_size, os.getcwd(),
                        sorted((k, v) for k, v in dict(env).items() if k not in SESSION_ONLY)])
    return os.path.join(agents, hashlib.sha256(ident.encode()).hexdigest()[:24])


def _sock_path(dirfd):
    # through the dir's fd: a socket path is limited to 107 bytes, an XT_HOME is not
    return f"/proc/self/fd/{dirfd}/sock"


def _same_user(sock):
    import struct
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def hand_to_agent(folder, jobdir, fd, timeout=5.0):
    """Give ``jobdir`` (and its locked supervisor.lock ``fd``) to the agent in ``folder``: True
    once its supervisor runs. False when no agent took it: the lock is still only ours."""
    try:
        dirfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(_sock_path(dirfd))
            if not _same_user(sock) or sock.recv(1) != b"?":  # it accepted: not exiting
                return False
            socket.send_fds(sock, [os.fsencode(jobdir)], [fd])
        except OSError:
            return False
        try:
            reply = sock.recv(64)
        except OSError:
            reply = b""
        if reply.startswith(b"ok"):
            return True
        # it died mid hand-over: whether it forked the supervisor first shows in who holds the lock
        return reply == b"" and _lock_held_elsewhere(os.path.join(jobdir, "supervisor.lock"))
    finally:
        sock.close()
        os.close(dirfd)


def _lock_held_elsewhere(path):
    """Whether another process holds an fd on ``path`` (our fd's lock is shared with a process
    it was passed to, so flock cannot tell)."""
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != me]
    except OSError:
        return False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") == path:
                    return True
            except OSError:
                pass
    return False


def agent(folder, idle, jobdir, lock_fd):
    """``--agent``: supervise ``jobdir`` (a fork), then stay and fork the supervisor of each job
    handed over (``hand_to_agent``) until ``idle`` seconds pass with no job, or ``folder`` is
    removed. Another live agent for ``folder``: just supervise ``jobdir`` here."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    me = try_lock(os.path.join(folder, "lock"))
    if me is None:
        return supervise(jobdir, lock_fd)
    dirfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = _sock_path(dirfd)
    _unlink(path)  # a dead agent's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(path)
    listener.listen(64)
    inode = os.stat(path).st_ino
    log = os.open(os.path.join(folder, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
                  | os.O_CLOEXEC, 0o600)
    os.dup2(log, 1)  # not the first job's supervisor.log
    os.dup2(log, 2)
    os.close(log)
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    own = [me, dirfd, listener.fileno(), rfd, wfd]  # no supervisor keeps them
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {_fork_supervisor(jobdir, lock_fd, own)}
    os.close(lock_fd)
    try:
        runner = load_runner(load_spec(jobdir)["runner"])
        _remember_runner()
        warm_template(runner, {}, every=True)
    except Exception:  # noqa: BLE001 - warming is an optimisation; a job's fork loads it
        pass
    last = time.monotonic()
    while True:
        try:
            while children:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
        except ChildProcessError:
            children.clear()
        now = time.monotonic()
        if children:
            last = now
        try:
            ours = os.stat(path).st_ino == inode
        except OSError:
            ours = False
        if not ours or (not children and now - last >= idle):
            break
        try:
            ready = select.select([listener, rfd], [], [],
                                  60.0 if children else idle - (now - last))[0]
        except InterruptedError:
            continue
        if rfd in ready:
            try:
                os.read(rfd, 4096)
            except BlockingIOError:
                pass
        if listener in ready:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                pid = _serve(conn, own + [conn.fileno()])
            if pid:
                children.add(pid)
                last = time.monotonic()
    if ours:
        _unlink(path)  # new clients start a new agent; those already queued are told no
    return 0


def _serve(conn, own):
    """One hand-over: the supervisor's pid, or None."""
    conn.settimeout(2.0)
    fds = []
    try:
        if not _same_user(conn):
            return None
        conn.sendall(b"?")
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        jobdir = os.fsdecode(msg)
        if len(fds) != 1 or not os.path.isabs(jobdir) or not os.path.exists(
                os.path.join(jobdir, "job.json")):
            conn.sendall(b"no")
            return None
        pid = _fork_supervisor(jobdir, fds[0], own)
        _close(fds)  # before "ok": from then on only the supervisor holds the job's lock
        conn.sendall(b"ok %d" % pid)
        return pid
    except OSError:
        return None
    finally:
        _close(fds)


def _close(fds):
    while fds:
        os.close(fds.pop())


def _fork_supervisor(jobdir, lock_fd, own):
    """Fork the supervisor of ``jobdir`` from this agent (never returns in the child)."""
    gc.freeze()
    pid = os.fork()
    if pid:
        return pid
    code = 2
    try:
        for fd in own:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        _redirect(os.path.join(jobdir, "supervisor.log"), 0o600)
        spec = load_spec(jobdir)
        if not _runner_loaded(spec["runner"]):
            # another runner than the one imported here: start this job's supervisor cold
            os.set_inheritable(lock_fd, True)
            os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), jobdir,
                                      str(lock_fd)])
        code = supervise(jobdir, lock_fd, spec)
    except BaseException:  # noqa: BLE001 - the child never returns into the agent's loop
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)


def mark_cancelled(runner, jobdir, spec, run):
    """Mark a run cancelled under the job lock (so it never starts); its pid when it runs.
    ``runner``: the runner module (its /proc reader and atomic write)."""
    rundir = run_dir(jobdir, spec, run)
    os.makedirs(rundir, exist_ok=True)
    with JobLock(jobdir):  # the supervisor starts runs under the same lock
        runner.write_atomic(os.path.join(rundir, "cancel"), "")
        pid, pstart = read_pid(rundir)
    if pid is not None and not os.path.exists(os.path.join(rundir, "exit")) and \
            runner.proc_start(pid) is not None and (pstart is None or runner.proc_start(pid) == pstart):
        return pid
    return None


def kill_groups(runner, pgids, grace):
    """SIGTERM each process group, wait up to ``grace`` s, then SIGKILL what is left."""
    live = []
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGTERM)
            live.append(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [p for p in live if group_alive(runner, p)]
        if live:
            time.sleep(0.02)
    for pgid in live:
        _killpg(pgid, signal.SIGKILL)


def group_alive(runner, pgid):
    """Any non-zombie process left in the group (the leader may be a zombie awaiting reaping)."""
    if runner.proc_alive(pgid, None):
        return True
    try:
        names = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return False
    for name in names:
        fields = runner.proc_stat(name)
        if fields and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def cancel(jobdir, runs):
    """``--cancel``: mark ``runs`` cancelled and kill those running."""
    spec = load_spec(jobdir)
    runner = load_runner(spec["runner"])
    pids = [p for p in (mark_cancelled(runner, jobdir, spec, r) for r in runs) if p]
    kill_groups(runner, pids, float(spec.get("grace", 5)))


def main(argv):
    if argv[1:2] == ["--start"]:
        jobdirs, agents, idle = argv[2:], None, 0
        if jobdirs[:1] == ["--agents"]:
            agents, idle, jobdirs = jobdirs[1], int(jobdirs[2]), jobdirs[3:]
        for jobdir in jobdirs:
            print(json.dumps({"jobdir": jobdir, "agent": start(jobdir, agents, idle)}), flush=True)
        return 0
    if argv[1:2] == ["--agent"]:
        return agent(argv[2], int(argv[3]), argv[4], int(argv[5]))
    if argv[1:2] == ["--cancel"]:
        cancel(argv[2], argv[3:])
        return 0
    return supervise(argv[1], int(argv[2]) if len(argv) > 2 else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
