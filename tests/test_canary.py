"""Canary secrets: a storage account key (the real key of a private Azurite account) and vault
secrets planted in the vault, then login, submit, run, fail, display and error paths. Every output,
log record, job file under XT_HOME and the work dir (zips opened), blob, ticket and the job's own
environment is scanned: the canaries appear nowhere."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import zipfile

import pytest

from xt_magic.core import api
from xt_magic.core.errors import XTError
from xt_magic.core.session import get_session

pytestmark = pytest.mark.azurite

ACCOUNT_KEY = base64.b64encode(b"xt-canary-account-key-5f1c0ffee1234567").decode()
VAULT_SECRET = "xt-canary-vault-secret-8d2e77"


@pytest.fixture
def canary_azurite(tmp_path_factory):
    from conftest import need
    from fixtures.azurite import azurite_binary, start_azurite, stop
    need(azurite_binary() is not None, "azurite")
    proc, info = start_azurite(str(tmp_path_factory.mktemp("azurite-canary")),
                               account=("canaryacct", ACCOUNT_KEY))
    yield info
    stop(proc)


def _expand(name: str, data: bytes):
    yield name, data
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for member in zf.namelist():
                yield from _expand(f"{name}!{member}", zf.read(member))


def hits(name: str, data: bytes, secrets: list[str]) -> list[str]:
    found = []
    for where, blob in _expand(name, data):
        for secret in secrets:
            if secret.encode() in blob:
                found.append(f"{where} contains {secret[:12]}...")
    return found


def test_canaries_never_leak(aad_vault, monkeypatch, canary_azurite, tmp_path, ip, capsys,
                             caplog):
    caplog.set_level(logging.DEBUG)
    secrets = [ACCOUNT_KEY, VAULT_SECRET, aad_vault.client_secret]
    aad_vault.env(monkeypatch)
    aad_vault.secrets["xt-keys"] = json.dumps({"teamstore": ACCOUNT_KEY})
    aad_vault.secrets["registry1-password"] = VAULT_SECRET
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n"
                 "  teamvault: {type: vault, url: 'https://xtteamvault.vault.azure.net/'}\n"
                 f"  teamstore: {{type: storage, provider: azure-blob-21, name: canaryacct,"
                 f" url: '{canary_azurite.blob_endpoint}', container: canary, key: $vault}}\n"
                 "  registry1: {type: registry, login-server: r.example, username: u,"
                 " password: $vault}\n"
                 "xt-services: {storage: teamstore, vault: teamvault, target: local}\n")
    shown = []

    def show(obj):
        shown.append(repr(obj))
        shown.append(str(obj))
        for hook in ("_repr_html_", "_repr_markdown_"):
            if hasattr(obj, hook):
                shown.append(str(getattr(obj, hook)()))

    # login (loads xt-keys) and use every secret once, so they are cached in the session
    show(ip.run_line_magic("xt_login", "--method service-principal"))
    from xt_magic.core.auth import vault
    assert vault.resolve(get_session(), "registry1", "password") == VAULT_SECRET
    show(ip.run_line_magic("xt_login", ""))
    show(api.whoami())
    show(api.config_show())
    show(api.config_get("external-services.teamstore"))
    show(api.config_explain("external-services.registry1.password"))

    # submit and run (the job dumps its whole environment), then a failing run
    ip.run_cell("seen = 1\n")
    res = ip.run_cell_magic("xt_run", "--outputs env --wait",
                            "import os\nenv = dict(os.environ)\nprint(env)\n")
    show(res)
    assert res["env"]  # the job's environment came back, and is scanned below
    shown.append(json.dumps(res["env"]))
    job = api.run_cell("import os\nraise RuntimeError(str(sorted(os.environ)))\n",
                       {"__name__": "__main__"})
    job.wait(timeout=120, progress=False)
    show(job)
    show(job.results())
    api.logs("run1.1")
    api.logs("run2.1")
    show(api.jobs())
    show(api.status("job2"))

    # error paths
    errors = []
    for call in (lambda: api.run_cell("x = 1\n", {}, env={"T": "$vault"}),
                 lambda: vault.resolve(get_session(), "nosuch"),
                 lambda: get_session().config(overrides={"general.env-vars": {"K": "$vault"}}),
                 lambda: api.run_cell("x = 1\n", {}, target="nosuchtarget")):
        try:
            call()
        except XTError as err:
            errors.append(str(err) + "".join(err._render_traceback_()))
    with monkeypatch.context() as m:
        m.setenv("XT_TRACEBACK", "1")
        try:
            vault.resolve(get_session(), "nosuch")
        except XTError as err:
            errors.append("".join(err._render_traceback_()))
    api.logout()
    monkeypatch.setenv("AZURE_CLIENT_SECRET", VAULT_SECRET)  # a wrong secret, reported
    try:
        api.login(method="service-principal")
    except XTError as err:
        errors.append(str(err))
    shown += errors
    assert errors

    found = []
    out = capsys.readouterr()
    found += hits("stdout/stderr", (out.out + out.err).encode(), secrets)
    found += hits("displays", "\n".join(shown).encode(), secrets)
    found += hits("logs", "\n".join(r.getMessage() for r in caplog.records).encode(), secrets)
    # every blob (tickets, bundles, events, console, metrics, outputs)
    from azure.storage.blob import BlobServiceClient
    client = BlobServiceClient(canary_azurite.blob_endpoint, credential={
        "account_name": "canaryacct", "account_key": ACCOUNT_KEY}).get_container_client("canary")
    blobs = list(client.list_blob_names())
    assert any(b.endswith("ticket.json") for b in blobs) and len(blobs) > 10
    for name in blobs:
        found += hits(name, client.download_blob(name).readall(), secrets)
    # every local file: XT_HOME (job dirs, runner copies, caches), the work dir
    count = 0
    for folder, _, files in os.walk(tmp_path):
        if "aad" in folder.split(os.sep):  # the test server's own cert/key
            continue
        for f in files:
            path = os.path.join(folder, f)
            if os.path.isfile(path):
                count += 1
                with open(path, "rb") as fh:
                    found += hits(path, fh.read(), secrets)
    assert count > 5
    for key, value in os.environ.items():  # nothing was exported into the kernel's env
        if key != "AZURE_CLIENT_SECRET":
            found += hits(f"env {key}", value.encode(), secrets)
    assert found == [], "\n".join(found)


def test_job_environ_is_an_allowlist():
    from xt_magic.core.auth.jobenv import job_environ
    kept = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
            "http_proxy": "http://proxy:3128", "NO_PROXY": "localhost", "CUDA_VISIBLE_DEVICES": "0",
            "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1", "PYTHONPATH": "/src",
            "PYTHONHASHSEED": "0", "VIRTUAL_ENV": "/v", "CONDA_PREFIX": "/c", "XT_HOME": "/x"}
    dropped = {"AZURE_CLIENT_SECRET": "s", "AZURE_CLIENT_ID": "id", "MY_DB_PASSWORD": "p",
               "AZURE_STORAGE_CONNECTION_STRING": "c", "IDENTITY_HEADER": "h",
               "AZURE_BATCH_KEY": "k", "AZURE_OPENAI_API_KEY": "k", "GITHUB_TOKEN": "t",
               "HF_TOKEN": "t", "WANDB_API_KEY": "k", "DATABASE_URL": "postgres://u:pw@h/db",
               "XT_LAUNCH": "l", "XT_LAUNCH_FILE": "/l", "PYTHON_KEYRING_PASSWORD": "p",
               "XT_STORAGE_KEY": "k", "HTTPS_PROXY": "http://user:pw@proxy:3128",
               "SSH_AUTH_SOCK": "/s", "SOMETHING_ELSE": "x"}
    assert job_environ({**kept, **dropped}) == kept
