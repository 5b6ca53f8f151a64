"""Adaptive search (``--search bayesian``) and early stopping: study state and the job's driver.

A job whose runs are chosen as results arrive (bayesian), or whose runs may be stopped early (any
sweep with an early-stopping policy), has a **driver**: one detached process per job on the
submitting machine (own session, survives the kernel, like the local job supervisor). It
- asks optuna's TPE sampler (seeded) for a point, ``concurrent`` runs at a time, and starts each as
  a run of the job through the job's backend (so every target works);
- reads the runs' events and metrics from the store, tells the study each ended run's value (the
  last or best logged value of the metric; a run that failed, or never logged it, is FAIL);
- applies the early-stopping policy (early_stop.py) to live runs and cancels a run it stops.

Study state lives in the store, never in the driver (``Layout.search``)::

    {ws}/jobs/{job}/search/trials.jsonl    {"trial": n, "run", "point", "params"}  before the run
                                           {"trial": n, "result": complete|fail|pruned, "value",
                                            "curve": [[step, value], ...], "reason"}  after it
                                           {"done": true}  the search is over
    {ws}/jobs/{job}/search/trial{n}.claim  created exclusively by the driver that runs trial n
    {ws}/jobs/{job}/search/template.json   the runs' ticket without run/paths/hparams, signed
    {ws}/jobs/{job}/search/stop            the job was cancelled: no new trials

so any kernel sees the trials (Job adds their runs to the record as they appear), a killed driver
is restarted from it (the study is rebuilt from the recorded trials: optuna's study is never the
state), and two drivers never run the same trial. The driver's private files (session config
values, lock, log) are under ``$XT_HOME/search/<store>/<ws>/<job>/``; it derives the job key
itself (protocol/keys.py), so no key or launch secret is ever written for it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import time

from ..errors import JobError, StoreError
from ..naming import assign, param
from ..paths import xt_home
from ..protocol import events, keys, tickets
from ..protocol.layout import Layout
from . import early_stop, ids, sweeps

TYPES = ("grid", "random", "bayesian")
OBJECTIVES = ("last", "best")
#: seconds between backend polls (reconciling dead processes) in the driver
POLL_SECONDS = 2.0


# -------------------------------------------------------------------------------- the job's plan
def search_type(cfg, flag: str | None, specs: dict) -> str | None:
    """``--search``, else ``hyperparameter-search.search-type`` when a config file or the session
    sets it (its default, random, keeps the automatic choice: grid over lists, random with
    --runs)."""
    if flag or not specs:
        return flag
    origin = cfg.origin("hyperparameter-search.search-type")
    if origin is None or origin.layer == "defaults":
        return None
    return cfg.get("hyperparameter-search.search-type") or None

def plan(cfg, search, specs: dict, runs, *, concurrent=None, metric=None, maximize=None,
         objective=None, early=None, seed=0) -> dict | None:
    """What the driver needs (stored as ``job.json`` extra["search"]); None: no driver."""
    if search == "dgd":
        raise JobError("search 'dgd' (XT's distributed grid descent) is not supported: use "
                       f"{param('search')} bayesian, random or grid",
                       key="hyperparameter-search.search-type")
    if search is not None and search not in TYPES:
        raise JobError(f"search {search!r} is not known", hint="one of: " + ", ".join(TYPES))
    policy = early_stop.from_config(cfg, early)
    if search != "bayesian" and policy is None:
        return None
    if not specs:
        hps = f"({param('hp')} or {param('hp_config')})"
        if search == "bayesian":
            raise JobError(f"{assign('search', 'bayesian')} needs hyperparameters {hps}")
        raise JobError(f"early stopping applies to sweeps: give hyperparameters {hps}",
                       key="early-stopping.early-policy")
    metric = metric or cfg.get("general.primary-metric")
    if not metric:
        raise JobError(f"a search needs a metric: {param('metric')} or general.primary-metric",
                       key="general.primary-metric")
    if maximize is None:
        maximize = cfg.get("general.maximize-metric")
    maximize = True if maximize is None else bool(maximize)
    objective = objective or cfg.get("hyperparameter-search.objective") or "last"
    if objective not in OBJECTIVES:
        raise JobError(f"{param('objective')} {objective!r}: expected last or best",
                       key="hyperparameter-search.objective")
    out = {"type": search, "metric": str(metric), "maximize": maximize, "objective": objective,
           "seed": int(seed), "early": policy.to_json() if policy else None}
    if search == "bayesian":
        runs = runs or cfg.get("hyperparameter-search.max-runs")
        if not runs or int(runs) < 1:
            raise JobError(f"bayesian search needs {assign('runs', 'N')} (or "
                           "hyperparameter-search.max-runs)")
        concurrent = concurrent or cfg.get("hyperparameter-search.concurrent") or 1
        if int(concurrent) < 1:
            raise JobError(f"{param('concurrent')} must be >= 1, got {concurrent}")
        limit = int(cfg.get("hyperparameter-search.max-runs-limit") or sweeps.MAX_RUNS_LIMIT)
        if int(runs) > limit:
            raise JobError(f"the sweep makes {int(runs):,} runs, over the limit of {limit:,}",
                           key="hyperparameter-search.max-runs-limit")
        out.update(runs=int(runs), concurrent=int(concurrent), space=_space_json(specs))
    return out


def describe(search: dict) -> str:
    """One line for the preview."""
    direction = "max" if search["maximize"] else "min"
    text = (f"bayesian search: {search['runs']} run(s), {search['concurrent']} at a time, "
            f"points chosen as results arrive" if search["type"] == "bayesian"
            else f"{search['type'] or 'sweep'} runs as above")
    text += f"; {direction} {search['metric']} ({search['objective']} value)"
    early = search.get("early")
    if early:
        text += (f"; early stopping: {early['kind']} from step {early['delay_evaluation']}, "
                 f"every {early['evaluation_interval']}")
    return text


def _space_json(specs: dict) -> dict:
    return {name: ({"values": list(v)} if isinstance(v, list) else
                   {"dist": v.kind, "args": list(v.args)}) for name, v in specs.items()}


def _space(space: dict) -> dict:
    return {name: (v["values"] if "values" in v else sweeps.Dist(v["dist"], tuple(v["args"])))
            for name, v in space.items()}


# -------------------------------------------------------------------------------- optuna
def _optuna():
    try:
        import optuna
    except ImportError as err:
        from ..errors import MissingDependencyError
        raise MissingDependencyError("optuna", "search", "--search bayesian") from err
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distribution(optuna, value):
    """(optuna distribution, map from its sample to the run's value). Unbounded normals are
    searched within 4 sigma; q-variants are sampled unquantised and rounded to q."""
    D = optuna.distributions
    if isinstance(value, list):
        return D.CategoricalDistribution(value), None
    k, a = value.kind, value.args
    if k == "choice":
        return D.CategoricalDistribution(list(a)), None
    if k == "linspace":
        lo, hi, n = a
        if int(n) < 2 or lo == hi:
            return D.CategoricalDistribution([lo]), None
        return D.CategoricalDistribution(value.values()), None
    if k == "randint":
        lo, hi = {0: sweeps.RANDINT_DEFAULT, 1: (0, a and a[0])}.get(len(a), a)
        return D.IntDistribution(int(lo), int(hi)), None
    base = k[1:] if k.startswith("q") else k
    if base == "uniform":
        dist = D.FloatDistribution(a[0], a[1])
    elif base == "loguniform":
        dist = D.FloatDistribution(a[0], a[1], log=True)
    elif base == "normal":
        dist = D.FloatDistribution(a[0] - 4 * a[1], a[0] + 4 * a[1])
    else:  # lognormal
        dist = D.FloatDistribution(math.exp(a[0] - 4 * a[1]), math.exp(a[0] + 4 * a[1]),
                                   log=True)
    if not k.startswith("q"):
        return dist, None
    q = a[-1]

    def quantise(v):
        v = round(v / q) * q
        return int(v) if float(q).is_integer() and float(v).is_integer() else v
    return dist, quantise


def ask(search: dict, trials: dict, number: int) -> tuple[dict, dict]:
    """(point for the run, optuna's raw params) of trial ``number``, from the recorded trials.

    The study is rebuilt from the trials every time (ended ones with their value, live ones as
    running, so concurrent asks differ), with a sampler seeded by (seed, number): a restarted
    driver asks exactly what the first one would have from the same state."""
    optuna = _optuna()
    space = _space(search["space"])
    dists, post = {}, {}
    for name, value in space.items():
        dists[name], post[name] = _distribution(optuna, value)
    study = optuna.create_study(
        direction="maximize" if search["maximize"] else "minimize",
        sampler=optuna.samplers.TPESampler(seed=search["seed"] * 100_003 + number,
                                           constant_liar=True, multivariate=True,
                                           n_startup_trials=min(10, max(2, search["runs"] // 5))))
    State = optuna.trial.TrialState
    for t in sorted(trials.values(), key=lambda t: t["trial"]):
        params = t.get("params")
        if not isinstance(params, dict) or set(params) != set(dists):
            continue
        result = t.get("result")
        kw = {}
        if result == "complete" and isinstance(t.get("value"), (int, float)):
            kw = {"state": State.COMPLETE, "value": float(t["value"])}
        elif result == "pruned":
            curve = {int(s): float(v) for s, v in t.get("curve") or []}
            kw = {"state": State.PRUNED, "intermediate_values": curve}
        elif result is None:
            kw = {"state": State.RUNNING}
        else:
            kw = {"state": State.FAIL}
        try:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, **kw))
        except (ValueError, TypeError):
            continue  # a hand-edited or foreign line: the study goes on without it
    trial = study.ask(dists)
    params = dict(trial.params)
    point = {name: (post[name](v) if post[name] else v) for name, v in params.items()}
    return {name: point[name] for name in space}, params


# -------------------------------------------------------------------------------- the trials log
class Trials:
    """The study state of a job in the store."""

    def __init__(self, store, layout: Layout, job: str):
        self.store, self.lay, self.job = store, layout, job
        self.path = layout.search(job, "trials.jsonl")

    def read(self) -> tuple[dict, bool]:
        """({trial number: merged record}, search over)."""
        trials, done = {}, False
        for rec in events.parse(self.store.read_from(self.path, 0)):
            if rec.get("done"):
                done = True
            n = rec.get("trial")
            if isinstance(n, bool) or not isinstance(n, int):
                continue
            if "point" in rec:
                if n not in trials and isinstance(rec.get("run"), str):
                    trials[n] = {"trial": n, "run": rec["run"], "point": rec["point"],
                                 "params": rec.get("params"), "result": None}
            elif n in trials and trials[n]["result"] is None and rec.get("result"):
                trials[n].update({k: rec.get(k) for k in ("result", "value", "curve", "reason")})
        return trials, done

    def claim(self, n: int) -> bool:
        """Own trial ``n``: an exclusive create; a claim left by a dead driver on this host (it
        died before recording the point) is taken over."""
        me = _me()
        path = self.lay.trial_claim(self.job, n)
        if self.store.create_exclusive(path, json.dumps(me).encode()):
            return True
        try:
            other = json.loads(self.store.read_bytes(path))
        except (ValueError, StoreError):
            return False
        if other.get("host") != me["host"] or _alive(other):
            return False
        self.store.write_bytes(path, json.dumps(me).encode())
        return True

    def add(self, record: dict) -> None:
        self.store.append(self.path, (json.dumps(record, sort_keys=True) + "\n").encode())

    def stopped(self) -> bool:
        return self.store.exists(self.lay.search(self.job, "stop"))


def _me() -> dict:
    from ...runner.runner import proc_start
    return {"host": socket.gethostname(), "pid": os.getpid(), "pstart": proc_start(os.getpid())}


def _alive(who: dict) -> bool:
    from ...runner.runner import proc_alive
    try:
        return proc_alive(int(who["pid"]), who.get("pstart"))
    except (KeyError, TypeError, ValueError):
        return False


def run_of(job: str, n: int) -> str:
    return ids.run_id(job, n + 1)


def request_stop(store, layout: Layout, job: str) -> None:
    """The job was cancelled: its driver starts no new trial."""
    store.write_bytes(layout.search(job, "stop"), b"")


def runs_and_points(store, layout: Layout, record) -> tuple[list, list, bool]:
    """The runs a bayesian job has made so far (in trial order), their points, search over."""
    trials, done = Trials(store, layout, record.job).read()
    ordered = [trials[n] for n in sorted(trials)]
    return [t["run"] for t in ordered], [t["point"] for t in ordered], done


# -------------------------------------------------------------------------------- values
def curve_of(store, layout: Layout, run: str, metric: str) -> list:
    return early_stop.steps_of(events.parse(store.read_from(layout.metrics(run), 0)), metric)


def objective_value(curve: list, objective: str, maximize: bool):
    if not curve:
        return None
    values = [v for _, v in curve]
    if objective == "best":
        return max(values) if maximize else min(values)
    return values[-1]


def result_of(info: dict, curve: list, search: dict) -> dict:
    """The trial result of an ended run: complete with its value, pruned (early stopped), or
    fail (failed, cancelled, or never logged the metric)."""
    value = objective_value(curve, search["objective"], search["maximize"])
    reason = info.get("reason")
    if info["state"] == events.CANCELLED and str(reason or "").startswith("early stopped"):
        return {"result": "pruned", "value": value, "curve": curve, "reason": reason}
    if info["state"] != events.COMPLETED:
        return {"result": "fail", "value": None, "curve": curve,
                "reason": reason or info["state"]}
    if value is None:
        return {"result": "fail", "value": None, "curve": curve,
                "reason": f"never logged {search['metric']}"}
    return {"result": "complete", "value": value, "curve": curve, "reason": None}


# -------------------------------------------------------------------------------- history
def history(store, layout: Layout, record, infos: dict) -> list[dict]:
    """One row per run in run order: value, best so far, state, stopped (and why), point."""
    search = record.search_spec() or {}
    metric = search.get("metric")
    trials = {}
    if search.get("type") == "bayesian":
        trials = {t["run"]: t for t in Trials(store, layout, record.job).read()[0].values()}
    runs = []
    for run, hp in zip(record.runs, record.hparams):
        t = trials.get(run) or {}
        if t.get("result"):
            value = t.get("value")
        else:
            value = objective_value(curve_of(store, layout, run, metric), search.get(
                "objective", "last"), search.get("maximize", True)) if metric else None
        runs.append((run, hp, infos.get(run) or {"state": events.CREATED}, value))
    return rank(runs, search.get("maximize", True))


def rank(runs: list, maximize: bool) -> list[dict]:
    """Rows of the trial history from (run, hparams, folded state, value) in run order: the best
    so far counts completed runs only (a stopped run's value is from before it was stopped)."""
    rows, best = [], None
    for order, (run, hp, info, value) in enumerate(runs, 1):
        stopped = str(info.get("reason") or "").startswith("early stopped")
        if value is not None and info["state"] == events.COMPLETED and (
                best is None or (value > best if maximize else value < best)):
            best = value
        rows.append({"order": order, "run": run, "state": info["state"], "value": value,
                     "best": best, "stopped": stopped,
                     "reason": info.get("reason") if info["state"] in events.FINAL else None,
                     **{f"hp.{k}": v for k, v in (hp or {}).items()}})
    return rows


# -------------------------------------------------------------------------------- the driver
def driver_dir(store, ws: str, job: str) -> str:
    tag = hashlib.sha256(store.identity().encode()).hexdigest()[:16]
    return os.path.join(xt_home(), "search", tag, ws, job)


def start(session, store, layout: Layout, record, key: bytes, spec: dict | None) -> None:
    """At submit: store the signed ticket spec of the job's runs (bayesian; submit.run_ticket)
    and start the driver."""
    if spec is not None:
        template = {"job": record.job, "workspace": record.workspace, **spec}
        store.write_bytes(layout.search(record.job, "template.json"),
                          json.dumps(tickets.sign(template, key)).encode())
    ensure_driver(session, store, record)


def ensure_driver(session, store, record, over: bool = False) -> bool:
    """Start the job's driver unless it runs (or the search is over, or this machine cannot
    derive the job's key). True when one was started."""
    from ...runner.runner import write_atomic
    from ..compute.local_supervisor import detach, try_lock
    if record.search_spec() is None or over or keys.master_key() is None:
        return False
    folder = driver_dir(store, record.workspace, record.job)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = try_lock(os.path.join(folder, "driver.lock"))
    if fd is None:
        return False  # alive
    try:
        values = {}
        for k, v in (session.values or {}).items():
            try:
                json.dumps(v)
            except (TypeError, ValueError):
                continue
            values[k] = v
        # private (0600): session config values may name resources
        write_atomic(os.path.join(folder, "driver.json"), json.dumps(
            {"cwd": session.cwd or os.getcwd(), "values": values,
             "workspace": record.workspace, "job": record.job}), mode=0o600)
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH")) if p)
        detach([sys.executable, "-c", "import sys\nfrom xt_magic.core.jobs.search import main\n"
                "sys.exit(main(sys.argv[1]))", folder], env, os.path.join(folder, "driver.log"))
    finally:
        os.close(fd)  # the driver takes the lock itself; a second one started meanwhile exits
    return True


def main(folder: str) -> int:
    """The driver process: ``python -c '...main(FOLDER)'`` (started by ensure_driver)."""
    from ..compute.local_supervisor import try_lock
    from ..session import Session
    lock = try_lock(os.path.join(folder, "driver.lock"))
    if lock is None:
        return 0  # another driver runs this job
    with open(os.path.join(folder, "driver.json")) as fh:
        spec = json.load(fh)
    from ...runner.runner import proc_start, write_atomic
    write_atomic(os.path.join(folder, "driver.pid"), f"{os.getpid()} {proc_start(os.getpid())}")
    session = Session(cwd=spec["cwd"])
    session.values.update(spec["values"])
    try:
        Driver(session, spec["workspace"], spec["job"]).run()
    except Exception:
        import traceback
        traceback.print_exc()
        return 1
    return 0


class Driver:
    """One job's driver loop (see the module docstring)."""

    def __init__(self, session, ws: str, job: str, sleep: float = 0.1):
        from .context import _Ctx
        from .records import JobRecord
        ctx = _Ctx(session)
        self.store, self.lay, self.job, self.sleep = ctx.store, Layout(ws), job, sleep
        self.record = JobRecord.load(self.store, ws, job)
        self.search = self.record.search_spec()
        self.backend = ctx.backend(self.record.target)
        self.policy = early_stop.Policy.from_json(self.search.get("early"))
        self.trials = Trials(self.store, self.lay, job)
        self.bayesian = self.search.get("type") == "bayesian"
        self.infos: dict = {}       # run -> folded state (final ones are not read again)
        self.tails: dict = {}       # run -> (Tail of metrics.jsonl, records so far)
        self.checked: dict = {}     # run -> last step the policy looked at
        self.closed: dict = {}      # run -> its whole curve, read once it was final
        self.key = keys.job_key(self.store, ws, job) if self.bayesian else None
        self.template = self._template() if self.bayesian else None
        self.last_poll = 0.0

    def _template(self) -> dict:
        raw = json.loads(self.store.read_bytes(self.lay.search(self.job, "template.json")))
        if not tickets.verify(raw, self.key) or raw.get("job") != self.job:
            raise JobError(f"{self.job}: the search's ticket template does not verify; "
                           "no run is started")
        return raw

    # -- one pass ---------------------------------------------------------------------------
    def _runs(self, trials: dict) -> list[str]:
        return list(self.record.runs) + [trials[n]["run"] for n in sorted(trials)]

    def _read_states(self, runs: list[str]) -> None:
        live = [r for r in runs if (self.infos.get(r) or {}).get("state") not in events.FINAL]
        for run in live:
            self.infos[run] = events.state(self.store, self.lay.events(run))
        busy = [r for r in live if self.infos[r]["state"] not in events.FINAL]
        if busy and time.monotonic() - self.last_poll > POLL_SECONDS:
            self.last_poll = time.monotonic()
            try:
                self.backend.poll(self.job, busy)
            except Exception as err:  # a target unreachable now: try again later
                print(f"poll failed: {err}", file=sys.stderr, flush=True)
            for run in busy:
                self.infos[run] = events.state(self.store, self.lay.events(run))

    def _curve(self, run: str) -> list:
        if run in self.closed:
            return self.closed[run]
        tail, records = self.tails.setdefault(run, (events.Tail(self.store,
                                                                self.lay.metrics(run)), []))
        records.extend(tail.read())
        curve = early_stop.steps_of(records, self.search["metric"])
        if (self.infos.get(run) or {}).get("state") in events.FINAL:
            self.closed[run] = curve  # the runner wrote its metrics before its final event
        return curve

    def _early_stop(self, runs: list[str]) -> None:
        curves = {r: self._curve(r) for r in runs if self.infos.get(r)}
        for run in runs:
            if (self.infos.get(run) or {}).get("state") != events.RUNNING or not curves.get(run):
                continue
            stop = early_stop.check(self.policy, run, curves, self.search["maximize"],
                                    after=self.checked.get(run))
            # a step is settled once another run has reached it: until then it is looked at again
            others = [c[-1][0] for r, c in curves.items() if r != run and c]
            if others:
                self.checked[run] = min(curves[run][-1][0], max(others))
            if stop is None:
                continue
            try:
                self.backend.cancel(self.job, [run], reason=stop.reason)
            except Exception as err:
                print(f"early stop of {run} failed: {err}", file=sys.stderr, flush=True)
            self.infos[run] = events.state(self.store, self.lay.events(run))

    def _launch(self, n: int, point: dict) -> None:
        from ..compute.base import Launch
        from .submit import run_ticket
        run = run_of(self.job, n)
        t = self.template
        ticket = tickets.sign(run_ticket(self.lay, self.job, run, point, t), self.key)
        self.store.append(self.lay.events(run), events.make_event(
            events.CREATED, job=self.job, run=run))
        self.store.write_bytes(self.lay.ticket(run), json.dumps(ticket).encode())
        secret = tickets.launch_secret(self.key, tickets.node_access(self.store, ticket))
        launch = Launch(run_id=run, job_id=self.job, workspace=self.lay.ws, ticket=ticket,
                        ticket_path=self.lay.ticket(run), launch_secret=secret,
                        max_seconds=t["build"]["max_seconds"], open_job=True)
        try:
            self.backend.submit(self.job, [launch])
        except Exception as err:
            events.append(self.store, self.lay.events(run), events.FAILED,
                          reason=f"submit failed: {err}")

    def _recover(self, trials: dict) -> None:
        """Trials whose point is recorded but whose run was never handed to the backend (the
        previous driver died in between) are launched now."""
        for n in sorted(trials):
            t = trials[n]
            if t["result"] is not None:
                continue
            evs = events.read(self.store, self.lay.events(t["run"]))
            if not any(e.get("state") not in (None, events.CREATED) for e in evs):
                self._launch(n, t["point"])

    def _top_up(self, trials: dict) -> None:
        live = sum(1 for t in trials.values() if t["result"] is None)
        n = 0
        while live < self.search["concurrent"] and not self.trials.stopped():
            while n < self.search["runs"] and n in trials:
                n += 1
            if n >= self.search["runs"]:
                return
            if not self.trials.claim(n):
                n += 1
                continue
            trials, _ = self.trials.read()  # the claim is ours: the state as of now
            if n in trials:
                continue
            point, params = ask(self.search, trials, n)
            rec = {"trial": n, "run": run_of(self.job, n), "point": point, "params": params}
            self.trials.add(rec)  # before the run exists: a restart finds and launches it
            trials[n] = dict(rec, result=None)
            self._launch(n, point)
            if self.trials.stopped():  # cancelled while we launched: the run goes too
                self.backend.cancel(self.job, [rec["run"]])
                return
            live += 1

    def run(self) -> None:
        first, last, pause = True, None, self.sleep
        while True:
            trials, done = self.trials.read() if self.bayesian else ({}, False)
            if done:
                return
            if first and self.bayesian:
                self._recover(trials)
            first = False
            runs = self._runs(trials)
            self._read_states(runs)
            if self.policy is not None:
                self._early_stop(runs)
            for n in sorted(trials):
                t = trials[n]
                info = self.infos.get(t["run"]) or {}
                if t["result"] is None and info.get("state") in events.FINAL:
                    result = result_of(info, self._curve(t["run"]), self.search)
                    self.trials.add({"trial": n, **result})
                    t.update(result)
            stopped = self.bayesian and self.trials.stopped()
            if self.bayesian and not stopped:
                self._top_up(trials)
                trials, _ = self.trials.read()
            all_final = all((self.infos.get(r) or {}).get("state") in events.FINAL
                            for r in self._runs(trials))
            if self.bayesian:
                over = (stopped or len(trials) >= self.search["runs"]) and all(
                    t["result"] is not None for t in trials.values())
                if over and all_final:
                    self.trials.add({"done": True})
                    try:  # e.g. Batch ends the job it kept open for the search's runs
                        self.backend.finish(self.job)
                    except Exception as err:
                        print(f"finishing the job on its target failed: {err}", file=sys.stderr,
                              flush=True)
                    return
            elif all_final:
                return
            # quick while runs report; backs off to a second when nothing moves (long trainings)
            now = (len(trials), [(self.infos.get(r) or {}).get("state") for r in self._runs(
                trials)], sum(len(recs) for _, recs in self.tails.values()))
            pause = self.sleep if now != last else min(pause * 1.5, 1.0)
            last = now
            time.sleep(pause)
