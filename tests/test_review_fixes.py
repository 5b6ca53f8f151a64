"""Regression tests for defects found in review: each fails without its fix."""
import pytest

from xt_magic.core.errors import ConfigError, ConfigWarning


def test_config_create_and_save_to_a_missing_directory_is_one_line(ip, tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "xt_config.yaml"
    with pytest.raises(ConfigError, match=r"cannot write .*xt_config.yaml: No such file"):
        ip.run_line_magic("xt_config", f"--create local --path {missing}")
    ip.run_line_magic("xt_config", "general.workspace=ws7")
    with pytest.raises(ConfigError, match=r"cannot write .*xt_config.yaml: No such file"):
        ip.run_line_magic("xt_config", f"--save --path {missing}")
    assert ip.run_line_magic("xt_config", "general.workspace") == "ws7"  # session kept


def test_config_save_onto_a_directory_is_one_line(ip, tmp_path):
    ip.run_line_magic("xt_config", "general.workspace=ws7")
    with pytest.raises(ConfigError, match=r"cannot read .*: Is a directory"):
        ip.run_line_magic("xt_config", f"--save --path {tmp_path}")


def test_run_magic_accepts_quoted_hp_env_and_tag_words(ip, monkeypatch):
    from xt_magic import magics
    seen = {}
    monkeypatch.setattr(magics.api, "run_cell", lambda source, ns, **opts: seen.update(opts))
    ip.run_cell_magic("xt_run", """--hp "lr=[0.01, 0.1]" --env 'MSG=hello world' B="x" """
                                """--tag "note=two words" """, "y = lr")
    assert seen["hp"] == {"lr": [0.01, 0.1]}  # the magic's words become the API's hp dict
    assert seen["env"] == {"MSG": "hello world", "B": "x"}
    assert seen["tags"] == {"note": "two words"}


def test_logout_drops_backends_built_on_the_credential_or_a_vault_key():
    from test_batch_unit import backend
    from xt_magic.core.auth import service
    from xt_magic.core.auth.cache import AuthCache
    from xt_magic.core.session import get_session

    class Cred:
        def get_token(self, *scopes, **kw):
            raise AssertionError("no token needed to build a client")

    session = get_session()
    session.auth = AuthCache(Cred(), "cli", "t1", "ada")
    old = session.cached("backend", "t", backend)
    old.session = session
    assert old.client() is not None  # a BatchClient holding the login credential
    service.logout(session)
    assert old._client is None  # closed: its credential is gone with the login
    assert session.cached("backend", "t", lambda: None) is None  # rebuilt on next use
    session._backends.clear()


def test_snapshot_never_ships_the_config_files(tmp_path, monkeypatch):
    import io
    import zipfile

    from xt_magic.core.jobs import snapshot
    from xt_magic.core.storage.file import FileStore
    work = tmp_path / "proj"
    (work / "sub").mkdir(parents=True)
    (work / "train.py").write_text("print(1)\n")
    # not a config layer, but any xt_config.yaml* may hold a literal key: left out by default
    (work / "sub" / "xt_config.yaml").write_text("general: {}\n")
    (work / "xt_config.yaml").write_text(  # a key saved literally, e.g. from the config form
        "external-services:\n  s: {type: storage, provider: azure-blob-21, key: CANARYKEY123}\n")
    monkeypatch.setenv("XT_USER_CONFIG", str(work / "user.yaml"))
    (work / "user.yaml").write_text("general: {workspace: w}\n")
    names = [n for n, _ in snapshot.plan(["$scriptdir/**"], [], str(work)).files]
    assert names == ["train.py"]
    assert snapshot.collect(["$scriptdir/**"], ["!sub/xt_config.yaml"], str(work))[0][0] \
        == "sub/xt_config.yaml"  # brought back on purpose; the config layers never
    snap = snapshot.build(FileStore(str(tmp_path / "store")), ["$scriptdir/**"], [], str(work))
    data = FileStore(str(tmp_path / "store")).read_bytes(snap.path)
    assert b"CANARYKEY123" not in data
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == names


def test_config_assignment_split_at_a_space_is_refused_not_half_set(ip):
    from xt_magic.core.errors import XTError
    with pytest.raises(XTError, match=r"'b\"' is not KEY=VALUE .*quote a value with spaces"):
        ip.run_line_magic("xt_config", 'general.experiment="a b"')
    assert ip.run_line_magic("xt_config", "general.experiment") == "exper1"  # unchanged
    ip.run_line_magic("xt_config", '"general.experiment=a b"')
    assert ip.run_line_magic("xt_config", "general.experiment") == "a b"


@pytest.mark.parametrize("xt_keys", ['["Zm9vYmFyLWNhbmFyeS1zdG9yZS1rZXktNzc3"]', '"just-a-string"'])
def test_xt_keys_secret_that_is_not_an_object_is_reported_not_a_crash(aad_vault, monkeypatch,
                                                                     xt_keys):
    from test_keyvault import STORE_KEY, login, write_config
    from xt_magic.core.auth import vault
    from xt_magic.core.session import get_session
    aad_vault.secrets.update({"xt-keys": xt_keys, "teamstore": STORE_KEY})
    write_config()
    status = login(aad_vault, monkeypatch)
    assert "xt-keys is not JSON (expected service -> key)" in str(status)
    assert vault.resolve(get_session(), "teamstore") == STORE_KEY  # the per-service secret
    assert STORE_KEY not in get_session().auth.scrub(f"x {STORE_KEY}")


def test_create_team_path_quoted_in_deploy_command_and_unwritable_path_is_one_line(ip, tmp_path):
    import shlex
    spaced = tmp_path / "my dir"
    spaced.mkdir()
    from xt_magic.core import api
    out = api.create_team("ml8", path=f"{spaced}/t.json")
    argv = shlex.split(out.deploy_command)
    assert argv[:8] == ["az", "deployment", "group", "create", "-g", "RESOURCE_GROUP",
                        "--template-file", f"{spaced}/t.json"]
    with pytest.raises(ConfigError, match=r"cannot write .*t.json: No such file"):
        ip.run_line_magic("xt_create_team", f"ml8 --path {tmp_path}/no/such/t.json")


def test_quoted_option_values_lose_their_quotes(ip, tmp_path):
    spaced = tmp_path / "my dir"
    spaced.mkdir()
    ip.run_line_magic("xt_config", f'--create local --path "{spaced}/xt_config.yaml"')
    assert (spaced / "xt_config.yaml").exists()
    out = ip.run_line_magic("xt_create_team", f"ml8 --path '{spaced}/t.json'")
    assert out.path == f"{spaced}/t.json" and (spaced / "t.json").exists()


def test_internal_stack_trace_setting_brings_the_full_traceback_back(ip, capsys, monkeypatch):
    monkeypatch.delenv("XT_TRACEBACK", raising=False)
    ip.run_cell("%xt_status job99")
    text = "".join(capsys.readouterr())
    assert "JobError: no job 'job99'" in text and "Traceback" not in text
    ip.run_line_magic("xt_config", "internal.stack-trace=true")
    ip.run_cell("%xt_status job99")
    assert "Traceback" in "".join(capsys.readouterr())
    ip.run_line_magic("xt_config", "--reset")
    ip.run_cell("%xt_status job99")
    assert "Traceback" not in "".join(capsys.readouterr())


@pytest.mark.parametrize("boxes", ["true", "7", "{a: 1}"])
def test_target_boxes_of_the_wrong_type_is_a_config_error(ip, boxes):
    with open("xt_config.yaml", "w") as fh:
        fh.write(f"compute-targets:\n  t1: {{service: pool, boxes: {boxes}}}\n")
    with pytest.warns(ConfigWarning, match=r"xt_config.yaml:2: compute-targets.t1.boxes: expected"):
        ip.run_line_magic("xt_config", "")  # an unused target only warns ...
    with pytest.raises(ConfigError, match=r"xt_config.yaml:2: compute-targets.t1.boxes: expected"):
        ip.run_cell_magic("xt_run", "--target t1", "x = 1\n")  # ... and stops what uses it


def test_monitor_loop_ends_cleanly_when_the_last_read_fails(xt_home):
    from types import SimpleNamespace

    from xt_magic.core.errors import StoreError
    from xt_magic.widgets.monitor import JobMonitor
    record = SimpleNamespace(workspace="ws1", runs=["run1.1"], hparams=None, name=None,
                             target="local")
    mon = JobMonitor(SimpleNamespace(id="job1", record=record), start=False)
    mon.runs["run1.1"].info = {"state": "completed"}
    mon._thread = object()  # as if start() had run this loop on its thread

    def tick():
        raise StoreError("store unreachable")
    mon.tick = tick
    mon._loop()  # raised out of the thread before, leaving the monitor "polling" forever
    assert not mon.polling and "store unreachable" in mon.message.value


def test_cancel_of_a_missing_run_is_one_line_and_touches_nothing(ip):
    from xt_magic.core.errors import JobError
    job = ip.run_cell_magic("xt_run", "", "x = 1\n")
    job.wait(timeout=60, progress=False)
    with pytest.raises(JobError, match=r"job1 has no run run1\.9 .*runs: run1\.1"):
        ip.run_line_magic("xt_cancel", "run1.9")
    assert job.refresh().state("run1.1") == "completed"


@pytest.mark.parametrize("line", ["--last 0", "--last -3"])
def test_jobs_last_must_be_positive(ip, line):
    from xt_magic.core.errors import JobError
    with pytest.raises(JobError, match="^--last must be >= 1"):
        ip.run_line_magic("xt_jobs", line)


@pytest.mark.parametrize("seconds", ["0", "-1"])
def test_max_seconds_must_be_positive_and_nothing_is_submitted(ip, seconds):
    from xt_magic.core import api
    from xt_magic.core.errors import JobError
    with pytest.raises(JobError, match="^--max-seconds must be >= 1"):
        ip.run_cell_magic("xt_run", f"--max-seconds {seconds}", "x = 1\n")
    assert len(api.jobs()) == 0


@pytest.mark.parametrize("name", ["a/../b", "/abs", "two words", ""])
def test_workspace_names_are_checked(ip, name):
    with pytest.raises(ConfigError, match="general.workspace"):
        ip.run_line_magic("xt_config", f'"general.workspace={name}"')


def test_malformed_connection_string_is_one_line_without_the_string(tmp_path):
    from xt_magic.core.session import Session
    from xt_magic.core.storage.azure_blob import AzureBlobStore
    bad = "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0LWNhbmFyeQ==;garbage"
    with pytest.raises(ConfigError) as info:
        AzureBlobStore.from_config("teamstore", {"type": "storage", "provider": "azure-blob-21",
                                                 "connection-string": bad}, Session())
    text = str(info.value)
    assert "connection-string" in text and "malformed" in text and "c2VjcmV0" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
