"""Early-stopping policies (pure functions over metric histories): six runs with known learning
curves, each policy stopping them exactly where its rule says."""
from __future__ import annotations

import pytest

from xt_magic.core.errors import JobError
from xt_magic.core.jobs import early_stop as es

# loss per step 1..6 (minimized)
CURVES = {
    "r1": [1.0, 0.8, 0.6, 0.5, 0.4, 0.3],
    "r2": [1.0, 0.9, 0.7, 0.6, 0.5, 0.45],
    "r3": [1.1, 1.0, 0.9, 0.85, 0.8, 0.78],
    "r4": [1.2, 1.2, 1.1, 1.1, 1.0, 1.0],
    "r5": [2.0, 1.9, 1.9, 1.8, 1.8, 1.8],
    "r6": [0.9, 0.7, 0.5, 0.35, 0.3, 0.2],
}


def simulate(policy, curves=CURVES, maximize=False):
    """All runs advance one step at a time; at each due step every live run is judged on what
    has been logged so far; a stopped run logs nothing more. -> {run: step it was stopped at}."""
    histories = {r: [] for r in curves}
    stopped = {}
    for step in range(1, 7):
        for run, values in curves.items():
            if run not in stopped:
                histories[run].append((step, values[step - 1]))
        if not policy.due(step):
            continue
        decisions = {run: es.evaluate(policy, run, histories, maximize, step)
                     for run in curves if run not in stopped}
        stopped.update({run: stop.step for run, stop in decisions.items() if stop})
    return stopped


def test_bandit_slack_factor():
    # best at each step is r6; a run stops when its loss is above best * 1.5
    assert simulate(es.Policy("bandit", delay_evaluation=2, slack_factor=0.5)) == {
        "r4": 2, "r5": 2, "r3": 3, "r2": 4}


def test_bandit_delay_and_interval():
    # evaluated only at steps 4 and 6 (>= delay 3, multiples of 2): at 6 r1 is exactly at 0.3
    assert simulate(es.Policy("bandit", delay_evaluation=3, evaluation_interval=2,
                              slack_factor=0.5)) == {"r2": 4, "r3": 4, "r4": 4, "r5": 4}


def test_bandit_slack_amount_maximize():
    flipped = {r: [-v for v in values] for r, values in CURVES.items()}
    # maximizing -loss with slack-amount 0.27: stop below best - 0.27 (step 2: -0.97)
    assert simulate(es.Policy("bandit", delay_evaluation=2, slack_amount=0.27), flipped,
                    maximize=True) == {"r3": 2, "r4": 2, "r5": 2}


def test_median():
    # step 2: running averages .9 .95 1.05 1.2 1.95 .8; r3's best 1.0 is above the others' median
    assert simulate(es.Policy("median", delay_evaluation=2)) == {"r3": 2, "r4": 2, "r5": 2}


def test_truncation():
    # 34%: 6 runs -> the worst 2 at step 2, 4 runs -> 1 at step 3, 3 runs -> 1 at step 4
    assert simulate(es.Policy("truncation", delay_evaluation=2, truncation_percentage=34)) == {
        "r4": 2, "r5": 2, "r3": 3, "r2": 4}
    # 20%: 6 runs -> 1, 5 runs -> 1, 4 runs -> none
    assert simulate(es.Policy("truncation", delay_evaluation=2, truncation_percentage=20)) == {
        "r5": 2, "r4": 3}


def test_reason_and_check():
    histories = {r: list(enumerate(v, 1)) for r, v in CURVES.items()}
    stop = es.check(es.Policy("median", delay_evaluation=2), "r5", histories, False)
    assert stop.reason == "early stopped (median at step 2: 1.9 vs 0.95)"
    assert es.check(es.Policy("median", delay_evaluation=2), "r5", histories, False,
                    after=2).step == 3  # steps already judged are not judged again
    assert es.check(es.Policy("median", delay_evaluation=2), "r1", histories, False) is None


def test_steps_of_and_config():
    records = [{"kind": "hparams", "values": {"lr": 1}},
               {"kind": "metrics", "step": 5, "values": {"loss": 0.5}},
               {"kind": "metrics", "values": {"acc": 1}},
               {"kind": "metrics", "values": {"loss": float("nan")}},
               {"kind": "metrics", "values": {"loss": 0.25}}]
    assert es.steps_of(records, "loss") == [(5, 0.5), (2, 0.25)]

    class Cfg(dict):
        def get(self, key, default=None):
            return dict.get(self, key, default)
    cfg = Cfg({"early-stopping.early-policy": "none", "early-stopping.delay-evaluation": 3,
               "early-stopping.slack-factor": 0.2})
    assert es.from_config(cfg) is None
    assert es.from_config(cfg, "bandit") == es.Policy("bandit", delay_evaluation=3,
                                                      slack_factor=0.2)
    with pytest.raises(JobError, match="early-stopping.delay-evaluation"):
        es.from_config(Cfg({"early-stopping.delay-evaluation": -1}), "median")
