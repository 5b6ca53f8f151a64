"""Widget logic without a browser (ipywidgets with no kernel uses its dummy comm)."""
from __future__ import annotations

import re
import types

import pytest
from runner_helpers import wait_for


from xt_magic.core import api  # noqa: E402
from xt_magic.core.config import validate  # noqa: E402

LOCAL = """\
# team config: keep this comment
compute-targets:
  gpu:            # the GPU box
    service: pool
    boxes: [localhost]
    setup: local
setups:
  extra:
    pip-packages: [numpy]
external-services:
  canarystore:
    type: storage
    provider: azure-blob
    connection-string: CANARY-SECRET-7f3e9a
"""


def all_widget_state(root) -> str:
    """Every synced trait of every widget under ``root`` (what the browser would receive)."""
    import ipywidgets as w
    seen, out, todo = set(), [], [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out.append(repr(node.get_state()))
        for value in node.get_state().values():
            items = value if isinstance(value, (list, tuple)) else [value]
            todo.extend(v for v in items if isinstance(v, w.Widget))
        todo.extend(getattr(node, "children", ()))
    return "\n".join(out)


def rows_by_label(box) -> dict:
    """Field rows (HBox: label, editor, provenance, error) under ``box``, by key name."""
    import ipywidgets as w
    rows = {}
    for child in getattr(box, "children", ()):
        if isinstance(child, w.HBox) and child.children and isinstance(child.children[0], w.Label):
            rows[child.children[0].value] = child
        else:
            rows.update(rows_by_label(child))
    return rows


@pytest.fixture
def form(tmp_path):
    (tmp_path / "work" / "xt_config.yaml").write_text(LOCAL)
    from xt_magic.widgets.config_form import ConfigForm
    return ConfigForm()


def test_form_has_a_tab_per_section_and_a_new_schema_key_appears(form, monkeypatch):
    assert {"compute-targets", "setups", "boxes", "external-services", "general", "code"} <= set(form.titles)
    assert "run-reports" not in form.titles  # x-unused sections are not edited here
    import copy
    schema = copy.deepcopy(validate.schema())
    schema["properties"]["general"]["properties"]["brand-new-key"] = {"type": "string", "description": "x"}
    schema["$defs"]["target"]["properties"]["brand-new-target-key"] = {"type": "integer"}
    monkeypatch.setattr(validate, "schema", lambda: schema)
    from xt_magic.widgets.config_form import ConfigForm
    fresh = ConfigForm()
    assert "brand-new-key" in rows_by_label(fresh.section("general"))
    assert "brand-new-target-key" in rows_by_label(fresh.section("compute-targets").fields)


def test_edit_target_then_save_keeps_comments_and_shows_provenance(form, tmp_path):
    editor = form.section("compute-targets")
    editor.picker.value = "gpu"
    rows = rows_by_label(editor.fields)
    assert "local" in rows["boxes"].children[2].value and "xt_config.yaml:5" in rows["boxes"].children[2].value
    assert "defaults" in rows["max-seconds"].children[2].value or "unset" in rows["max-seconds"].children[2].value
    rows["max-runs"].children[1].value = "3"
    assert "pending" in rows["max-runs"].children[2].value
    rows["setup"].children[1].value = "extra"  # a reference: dropdown of existing setups
    assert set(rows["setup"].children[1].options) >= {"local", "extra"}
    assert "saved 2 values" in form.save()
    text = (tmp_path / "work" / "xt_config.yaml").read_text()
    assert "# team config: keep this comment" in text and "# the GPU box" in text
    assert "max-runs: 3" in text and "setup: extra" in text
    assert api.config_get("compute-targets.gpu.max-runs") == 3
    rows = rows_by_label(form.section("compute-targets").fields)
    assert "local" in rows["max-runs"].children[2].value  # provenance now the local file


def test_inline_validation_names_the_key_path_and_blocks_apply(form):
    editor = form.section("compute-targets")
    editor.picker.value = "gpu"
    rows = rows_by_label(editor.fields)
    rows["max-runs"].children[1].value = "many"
    assert "compute-targets.gpu.max-runs" in rows["max-runs"].children[3].value
    assert "integer" in rows["max-runs"].children[3].value
    assert form.apply_button.disabled and form.save_button.disabled
    rows["max-runs"].children[1].value = "2"
    assert rows["max-runs"].children[3].value == "" and not form.apply_button.disabled
    assert form.apply() and api.config_get("compute-targets.gpu.max-runs") == 2


def test_add_rename_delete_entries_and_reference_dropdowns(form):
    setups = form.section("setups")
    setups.name.value = "gpu-env"
    setups.add()
    assert setups.picker.value == "gpu-env"
    form.apply()
    targets = form.section("compute-targets")
    targets.picker.value = "gpu"
    assert "gpu-env" in rows_by_label(targets.fields)["setup"].children[1].options
    targets.name.value = "big"
    targets.rename()
    assert targets.picker.value == "big" and "gpu" not in targets.picker.options
    form.apply()
    assert api.config_get("compute-targets.big.boxes") == ["localhost"]
    assert "gpu" not in api.config_get("compute-targets")
    targets.delete()
    form.apply()
    assert "big" not in api.config_get("compute-targets")
    # a callback error (a duplicate name) shows in the widget and never raises into the comm
    targets.name.value = "local"
    targets.add()
    assert "already exists" in form.message.value


def test_secrets_never_enter_widget_state(form):
    services = form.section("external-services")
    services.picker.value = "canarystore"
    rows = rows_by_label(services.fields)
    assert rows["connection-string"].children[1].placeholder.startswith("••••")
    assert "CANARY-SECRET-7f3e9a" not in all_widget_state(form.widget)
    rows["connection-string"].children[1].value = "NEW-CANARY-99"  # typing replaces it...
    form.apply()
    assert "NEW-CANARY-99" not in all_widget_state(form.widget)  # ...and it is not echoed back


# ---- monitor -----------------------------------------------------------------------------------

SWEEP = ("import time, xt_magic\nfor step in range(4):\n    xt_magic.log(step=step, loss=lr / (step + 1))\n"
         "    print('step', step, flush=True)\n    time.sleep(0.05)\n")


def until(pred, timeout=90.0):
    return wait_for(pred, timeout, "widget state")


def test_monitor_follows_a_sweep_to_the_end_with_incremental_reads(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell(SWEEP, {"__name__": "__main__"}, hp={"lr": [0.1, 0.2, 0.4]})
    mon = JobMonitor(job.id)
    until(lambda: not mon.polling)
    assert set(mon.states().values()) == {"completed"}
    assert mon.progress.value == 3 and "3 completed" in mon.notification.value
    assert "<th>lr</th>" in mon.table.value and "<th>loss</th>" in mon.table.value
    assert "0.4" in mon.table.value and "polyline" in mon.chart.value
    assert "step 3" in mon.log.value  # the selected run's console tail
    assert mon.cancel_job_button.disabled
    # each byte of each append-only file was read once: the sum equals the files' sizes
    store = xt_home / "file_store" / "ws1" / "runs"
    total = sum((store / r / n).stat().st_size for r in job.runs for n in ("events.jsonl", "metrics.jsonl"))
    # the consoles the selection was on (it follows the running ones), each byte once; the
    # selected run's to its end
    shown = mon.run_picker.value
    assert mon.runs[shown].console.offset == (store / shown / "console.txt").stat().st_size
    total += sum(v.console.offset for v in mon.runs.values())
    assert mon.bytes_read == total
    assert mon.tick() is False  # nothing new: a tick reads nothing


def test_monitor_shows_hparams_the_run_logged(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell("from xtlib.run import Run\nRun().log_hparams({'arch': 'mlp-7'})\n",
                       {"__name__": "__main__"}, hp={"lr": [0.3]}).wait(timeout=60, progress=False)
    mon = JobMonitor(job.id, start=False)
    mon.tick()
    assert "<th>arch</th>" in mon.table.value and "mlp-7" in mon.table.value
    assert "<th>lr</th>" in mon.table.value


def test_monitor_shows_the_selected_runs_cell_outputs(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    cell = ("import matplotlib.pyplot as plt\nprint('lr is', lr)\nplt.plot([1, lr])\n"
            "plt.show()\nlr * 10")
    job = api.run_cell(cell, {"__name__": "__main__"}, hp={"lr": [1, 2]})
    mon = JobMonitor(job.id)
    until(lambda: not mon.polling)
    # which run it follows while they run depends on which started first: pick one
    mon.run_picker.value = "run1.1"
    shown = mon.cell_outputs.value
    assert "lr is 1" in shown and "data:image/png;base64," in shown and ">10<" in shown
    mon.run_picker.value = "run1.2"
    assert "lr is 2" in mon.cell_outputs.value and ">20<" in mon.cell_outputs.value


def test_monitor_resumes_in_a_fresh_session_and_backs_off(xt_home):
    from xt_magic.core import session
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell("print('hi')\n", {"__name__": "__main__"}).wait(timeout=60, progress=False)
    session.reset_session()  # as after a kernel restart: only the store knows the job
    mon = JobMonitor(None, start=False)  # None: the workspace's last job
    assert mon.id == job.id
    assert mon.tick() and mon.states() == {job.runs[0]: "completed"}
    mon2 = JobMonitor(job.id, start=False, min_interval=0.1, max_interval=0.4)
    mon2.runs[job.runs[0]].info["state"] = "running"  # pretend it is live: nothing new to read
    mon2.runs[job.runs[0]].events.offset = 10 ** 9
    intervals = []
    mon2._stop.wait = lambda t: intervals.append(t) or (len(intervals) >= 5 and mon2._stop.set())
    mon2._loop()
    assert intervals == sorted(intervals) and intervals[-1] == 0.4 and intervals[1] > intervals[0]


def test_monitor_cancel_buttons(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell("import time\ntime.sleep(60)\n", {"__name__": "__main__"}, hp={"k": [1, 2]})
    mon = JobMonitor(job.id, min_interval=0.1)
    until(lambda: list(mon.states().values()).count("running") == 2)
    mon.run_picker.value = job.runs[0]
    mon.cancel_run_button.click()
    until(lambda: mon.states()[job.runs[0]] == "cancelled")
    assert mon.states()[job.runs[1]] == "running"
    mon.cancel_job_button.click()
    until(lambda: not mon.polling)
    assert set(mon.states().values()) == {"cancelled"} and "cancelled" in mon.notification.value


def test_monitor_errors_show_in_the_widget(xt_home, monkeypatch):
    from xt_magic.core.errors import JobError
    from xt_magic.widgets.monitor import JobMonitor
    with pytest.raises(JobError):
        JobMonitor("job99")  # constructing for a missing job is a normal one-line error
    job = api.run_cell("print(1)\n", {"__name__": "__main__"}).wait(timeout=60, progress=False)
    mon = JobMonitor(job.id, start=False)
    mon.run_picker.value = job.runs[0]
    monkeypatch.setattr(type(mon.store), "read_from",
                        lambda self, p, o: (_ for _ in ()).throw(OSError("disk gone")))
    mon._on_pick(None)  # a callback: must not raise
    assert "disk gone" in mon.message.value


def test_monitor_chart_axis_titles_log_scale_and_time_axis():
    from xt_magic.widgets.monitor import svg_chart
    chart = svg_chart({"run1.1": [(0, 1.0), (1, 0.1), (2, 0.01)]}, xlabel="epoch", ylabel="loss")
    assert ">epoch</text>" in chart and ">loss</text>" in chart and "rotate(-90)" in chart
    labels = re.findall(r"<text class='xt-ytick' x='([\d.]+)'", chart)
    assert labels and all(float(x) < 58 for x in labels)  # y labels left of the plot area
    logged = svg_chart({"run1.1": [(0, 1.0), (1, 0.1), (2, 0.01)]}, ylabel="loss", log=True)
    assert ">loss (log)</text>" in logged and ">0.01</text>" in logged and ">0.1</text>" in logged
    assert "no positive values" in svg_chart({"r": [(0, -1.0)]}, log=True)


def test_monitor_defaults_to_the_primary_metric_else_the_first_logged(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    cell = "import xt_magic\nfor s in range(3):\n    xt_magic.log(step=s, loss=1.0 / (s + 1), acc=s / 3)\n"
    job = api.run_cell(cell, {}).wait(timeout=60, progress=False)
    mon = JobMonitor(job.id, start=False)
    mon.tick()
    assert list(mon.metric_picker.options) == ["loss", "acc"]  # logged order, not a-z
    assert mon.metric_picker.value == "loss"  # general.primary-metric (test-acc) not logged
    assert ">step</text>" in mon.chart.value and ">loss</text>" in mon.chart.value
    mon.x_axis.value = "time"
    assert ">time (s)</text>" in mon.chart.value
    mon.log_y.value = True
    assert ">loss (log)</text>" in mon.chart.value
    api.config_set({"general.primary-metric": "acc"})
    mon = JobMonitor(job.id, start=False)
    mon.tick()
    assert mon.metric_picker.value == "acc"
    # done: the cancel button is disabled and has no colour left
    assert mon.cancel_job_button.disabled and mon.cancel_job_button.button_style == ""
    assert "<pre class='xt-log'>" in mon.log.value or mon.log.value == ""


def test_monitor_selection_follows_running_runs_until_the_user_picks(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    cell = ("import time, os\nprint('run', k, flush=True)\n"
            "while k == 2 and not os.path.exists(stop):\n    time.sleep(0.05)\n")
    stop = str(xt_home / "stop-flag")
    job = api.run_cell(cell, {"stop": stop}, hp={"k": [1, 2]})
    mon = JobMonitor(job.id, start=False)
    until(lambda: mon.tick() is not None and mon.states() == {job.runs[0]: "completed",
                                                              job.runs[1]: "running"})
    mon.tick()
    assert mon.run_picker.value == job.runs[1]  # moved off the ended run onto the running one
    until(lambda: mon.tick() is not None and "run 2" in mon.log.value)
    mon.run_picker.value = job.runs[0]  # the user's pick stays
    mon.tick()
    assert mon.run_picker.value == job.runs[0] and "run 1" in mon.log.value
    open(stop, "w").close()
    job.wait(timeout=60, progress=False)


def test_monitor_heartbeat_keeps_a_stale_note_only_while_polling(xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell("import time\ntime.sleep(0.5)\n", {})
    mon = JobMonitor(job.id, min_interval=0.05, max_interval=0.1)
    until(lambda: "xt-stale" in mon.heartbeat.value or not mon.polling)
    beats = set()
    until(lambda: beats.add(mon.heartbeat.value) or len(beats) > 2 or not mon.polling)
    until(lambda: not mon.polling)
    assert mon.heartbeat.value == ""  # the job ended: nothing can go stale
    assert len(beats - {""}) >= 2 and all(f"%xt_monitor {job.id}" in b for b in beats - {""})


# ---- login panel ---------------------------------------------------------------------------------

def test_login_panel_device_code_status_and_logout(monkeypatch):
    from xt_magic.core.auth import service as auth
    from xt_magic.widgets.login_panel import LoginPanel
    calls = []

    class FakeCache:
        who, tenant, method, vault_url, vault_error = "ana@contoso", "t-1", "device-code", "https://v/", None
        vault_names = ["storage-key", "batch-key"]

        def clear(self):
            calls.append("clear")

    def fake_login(session, method=None, tenant=None, out=None, device_code_callback=None):
        calls.append((method, tenant))
        device_code_callback("https://microsoft.com/devicelogin", "ABCD-1234", None)
        assert "ABCD-1234" in panel.device.value and "href='https://microsoft.com/devicelogin'" in panel.device.value
        session.auth = FakeCache()

    monkeypatch.setattr(auth, "login", fake_login)
    panel = LoginPanel()
    assert "not logged in" in panel.status.value and panel.logout_button.disabled
    panel.method.value, panel.tenant.value = "device-code", "t-1"
    panel.login(wait=True)
    assert calls[0] == ("device-code", "t-1")
    assert "ana@contoso" in panel.status.value and "batch-key, storage-key" in panel.status.value
    assert panel.login_button.disabled and not panel.logout_button.disabled
    panel.logout_button.click()
    assert "clear" in calls and "not logged in" in panel.status.value


def test_login_panel_failure_shows_in_panel(monkeypatch):
    from xt_magic.core.auth import service as auth
    from xt_magic.core.errors import AuthError
    from xt_magic.widgets.login_panel import LoginPanel

    def failing(*a, **k):
        raise AuthError("login failed; tried cli")

    monkeypatch.setattr(auth, "login", failing)
    panel = LoginPanel()
    panel.login(wait=True)
    assert "login failed; tried cli" in panel.message.value and not panel.login_button.disabled


def test_magics_open_the_widgets(ip, tmp_path):
    from xt_magic.widgets.config_form import ConfigForm
    from xt_magic.widgets.login_panel import LoginPanel
    from xt_magic.widgets.monitor import JobMonitor
    assert isinstance(ip.run_line_magic("xt_config", "--form"), ConfigForm)
    assert isinstance(ip.run_line_magic("xt_login", "--form"), LoginPanel)
    job = api.run_cell("print(1)\n", {"__name__": "__main__"}).wait(timeout=60, progress=False)
    mon = ip.run_line_magic("xt_monitor", job.id)
    assert isinstance(mon, JobMonitor) and mon.id == job.id
    assert "application/vnd.jupyter.widget-view+json" in mon._repr_mimebundle_()


def test_a_job_displays_as_a_live_monitor_in_a_kernel(xt_home):
    from xt_magic.widgets import job_bundle, register_job_display
    job = api.run_cell("print(1)\n", {"__name__": "__main__"}).wait(timeout=60, progress=False)
    bundle = job_bundle(job)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == repr(job) and "completed" in bundle["text/html"]
    registered = []

    class ZMQInteractiveShell:  # stands for ipykernel's shell: only its type name is checked
        class display_formatter:
            class mimebundle_formatter:
                for_type_by_name = staticmethod(lambda *a: registered.append(a))
    register_job_display(ZMQInteractiveShell())
    assert registered == [("xt_magic.core.jobs.job", "Job", job_bundle)]
    register_job_display(types.SimpleNamespace())  # terminal IPython: nothing registered
    assert len(registered) == 1


@pytest.mark.azurite
def test_monitor_over_the_blob_store_on_batch(batch_config):
    """Incremental reads work the same over append blobs (ranged GETs): a Batch sweep with its
    jobs in Azurite reaches all-completed in the monitor."""
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell(SWEEP, {"__name__": "__main__"}, hp={"lr": [0.1, 0.2]}, target="batch")
    mon = JobMonitor(job.id, min_interval=0.1)
    until(lambda: not mon.polling, timeout=120)
    assert set(mon.states().values()) == {"completed"}, mon.states()
    assert "step 3" in mon.log.value and "polyline" in mon.chart.value
    assert type(mon.store).__name__ == "AzureBlobStore"


def test_form_opens_on_an_invalid_config_and_shows_where_to_fix_it(tmp_path):
    (tmp_path / "work" / "xt_config.yaml").write_text(
        "compute-targets:\n  gpu:\n    service: pool\n    setup: nosuch\n")
    from xt_magic.widgets.config_form import ConfigForm
    form = ConfigForm()
    assert "compute-targets.gpu.setup" in form.problems.value and "nosuch" in form.problems.value
    editor = form.section("compute-targets")
    editor.picker.value = "gpu"
    row = rows_by_label(editor.fields)["setup"]
    assert "not defined in setups" in row.children[3].value
    row.children[1].value = "local"
    assert form.problems.value == "" and not form.save_button.disabled
    assert "saved 1 value" in form.save()


def test_a_new_entry_shows_its_starting_values(form):
    targets = form.section("compute-targets")
    targets.name.value = "fresh"
    targets.add()
    rows = rows_by_label(targets.fields)
    assert rows["service"].children[1].value == "pool"
    assert "pending" in rows["service"].children[2].value
    rows["setup"].children[1].value = "extra"
    assert form.apply() and api.config_get("compute-targets.fresh") == {"service": "pool", "setup": "extra"}


def test_target_editor_shows_the_keys_of_its_backend(form):
    """Per-kind target keys come from the backend classes in the registry."""
    editor = form.section("compute-targets")
    editor.picker.value = "gpu"  # service: pool on localhost: the local backend
    rows = rows_by_label(editor.fields)
    assert {"service", "setup", "boxes", "max-runs"} <= set(rows)
    assert not {"vm-size", "partition", "azure-image"} & set(rows)
    assert set(rows["service"].children[1].options) >= {"pool", "slurm", "local"}


def test_form_fields_show_schema_help_and_labels_are_not_cut(form):
    """Each field shows its schema description; sections are picked from one dropdown (no tab
    bar wrapping onto two rows); the buttons size to their labels."""
    import ipywidgets as w
    from xt_magic.core.config.validate import schema
    assert isinstance(form.picker, w.Dropdown) and not isinstance(form.tabs, w.Tab)
    form.picker.value = "general"
    rows = rows_by_label(form.section("general"))
    described = schema()["properties"]["general"]["properties"]["primary-metric"]["description"]
    assert described in rows["primary-metric"].children[4].value
    assert form.tabs.selected_index == form.titles.index("general")
    assert form.save_button.layout.width == "auto" and form.apply_button.layout.width == "auto"


def test_slurm_target_shows_slurm_keys_only(form):
    form.pending["compute-targets.hpc"] = {"service": "slurm", "login": "localhost",
                                           "partition": "debug"}
    editor = form.section("compute-targets")
    editor.rebuild(select="hpc")
    rows = rows_by_label(editor.fields)
    assert "partition" in rows and not {"vm-size", "azure-image", "boxes"} & set(rows)
    assert all(r.children[4].value for r in rows.values())  # every key with its help line
    assert "slurm:" not in rows["partition"].children[4].value  # its own kind's words only
    local = form.section("compute-targets")
    local.rebuild(select="gpu")
    boxes = rows_by_label(local.fields)["boxes"].children[4].value
    assert "pool:" not in boxes and "local:" not in boxes and "boxes" in boxes


def test_form_with_path_saves_there_not_in_the_working_dir(tmp_path):
    from xt_magic.widgets.config_form import ConfigForm
    target = tmp_path / "elsewhere" / "xt_config.yaml"
    target.parent.mkdir()
    form = ConfigForm(path=str(target))
    form.pending["general.experiment"] = "demo"
    assert "saved" in form.save()
    assert "experiment: demo" in target.read_text()
    assert not (tmp_path / "work" / "xt_config.yaml").exists()
