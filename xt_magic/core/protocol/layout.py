"""Every store path of a workspace (docs/architecture.md "Store layout"). Nothing else builds one."""
from __future__ import annotations

#: general.workspace when the config names none
DEFAULT_WORKSPACE = "ws1"


class Layout:
    """Store paths of one workspace."""

    def __init__(self, workspace: str):
        self.ws = workspace

    # -- ids and jobs ----------------------------------------------------------------------------
    def ids_dir(self) -> str:
        return f"{self.ws}/ids"

    def id_marker(self, job: str) -> str:
        return f"{self.ws}/ids/{job}"

    def jobs_dir(self) -> str:
        return f"{self.ws}/jobs"

    def job_dir(self, job: str) -> str:
        return f"{self.ws}/jobs/{job}"

    def job_json(self, job: str) -> str:
        return f"{self.ws}/jobs/{job}/job.json"

    def bundle(self, job: str, name: str) -> str:
        return f"{self.ws}/jobs/{job}/bundle/{name}"

    def runner(self, job: str) -> str:
        return self.bundle(job, "runner.py")

    # -- adaptive search state (core/jobs/search.py) ---------------------------------------------
    def search(self, job: str, name: str) -> str:
        """``trials.jsonl`` (append only), ``template.json`` (signed ticket template), ``stop``."""
        return f"{self.ws}/jobs/{job}/search/{name}"

    def trial_claim(self, job: str, trial: int) -> str:
        """Created exclusively by the driver that runs trial ``trial``."""
        return f"{self.ws}/jobs/{job}/search/trial{int(trial)}.claim"

    # -- runs ------------------------------------------------------------------------------------
    def run_dir(self, run: str) -> str:
        return f"{self.ws}/runs/{run}"

    def run(self, run: str, name: str) -> str:
        return f"{self.ws}/runs/{run}/{name}"

    def ticket(self, run: str) -> str:
        return self.run(run, "ticket.json")

    def events(self, run: str) -> str:
        return self.run(run, "events.jsonl")

    def console(self, run: str) -> str:
        return self.run(run, "console.txt")

    def metrics(self, run: str) -> str:
        return self.run(run, "metrics.jsonl")

    def checkpoint(self, run: str, name: str) -> str:
        """A run's checkpoint object (XT's set_checkpoint, xt_magic.checkpoint)."""
        return self.run(run, f"checkpoints/{name}")

    def outputs(self, run: str) -> str:
        """The cell's outputs: nbformat output dicts, one JSON line each."""
        return self.run(run, "outputs.jsonl")

    def notebook(self, run: str) -> str:
        """The run notebook: parameters cell + the cell with its outputs."""
        return self.run(run, "run.ipynb")

    def run_paths(self, run: str) -> dict:
        """The paths a run's ticket names: events, console, metrics, vars, files, outputs,
        notebook."""
        return self._paths(self.run_dir(run))

    def node_log(self, run: str, name: str) -> str:
        """Batch: the node's own stdout/stderr, uploaded when the task ends."""
        return self.run(run, f"node/{name}")

    # -- batch multi-node ranks ------------------------------------------------------------------
    def rank_dir(self, run: str, rank: int) -> str:
        return f"{self.ws}/runs/{run}/rank{int(rank)}"

    def rank_ticket(self, run: str, rank: int) -> str:
        return f"{self.rank_dir(run, rank)}/ticket.json"

    def rank_paths(self, run: str, rank: int) -> dict:
        """Rank r >= 1 of a multi-node run: its own events/console/metrics/outputs."""
        return self._paths(self.rank_dir(run, rank))

    @staticmethod
    def _paths(base: str) -> dict:
        return {"events": f"{base}/events.jsonl", "console": f"{base}/console.txt",
                "metrics": f"{base}/metrics.jsonl", "vars": f"{base}/outputs/vars.pkl",
                "files": f"{base}/outputs/files.zip", "outputs": f"{base}/outputs.jsonl",
                "notebook": f"{base}/run.ipynb"}

    # -- shared ----------------------------------------------------------------------------------
    @staticmethod
    def snapshot(sha: str) -> str:
        return f"snapshots/{sha}.zip"
