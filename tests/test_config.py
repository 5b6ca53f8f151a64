"""Layered config: defaults, layers, provenance, substitution, $vault, XT compatibility, templates, docs."""
import os
import textwrap

import pytest

from xt_magic.core.config import VaultRef, config_files, load_config
from xt_magic.core.config import docs, loader, service
from xt_magic.core.errors import ConfigError
from xt_magic.core.session import get_session

XT_FILE = """\
# A typical XT user's local config (4-space indent, XT keys, sections xt_magic does not use)
external-services:
    xtsandboxstorage: {type: "storage", provider: "azure-blob-21", key: "$vault"}
    xtsandboxmongo: {type: "mongo", mongo-connection-string: "$vault"}
    xtsandboxbatch: {type: "batch", key: "$vault", url: "https://xtsandboxbatch.eastus.batch.azure.com"}
    xtsandboxvault: {type: "vault", url: "https://xtsandboxvault.vault.azure.net/"}
    xtsandboxregistry: {type: "registry", login-server: "xtsandbox.azurecr.io", username: "xtsandbox", password: "$vault", login: true}

xt-services:
    storage: "xtsandboxstorage"
    mongo: "xtsandboxmongo"
    vault: "xtsandboxvault"
    target: "local"

compute-targets:
    local: {service: "pool", boxes: ["localhost"], setup: "local"}
    batch: {service: "xtsandboxbatch", vm-size: "Standard_NC6", azure-image: "dsvm", nodes: 1, low-pri: true, box-class: "dsvm", setup: "batchsetup", docker: "pytorch-xtlib"}
    mypool: {service: "pool", boxes: ["vm10", "me@10.0.0.5"], setup: "local"}

setups:
    local: {activate: "$call conda activate $current_conda_env", conda-packages: [], pip-packages: ["xtlib==*"]}
    batchsetup: {activate: null, conda-packages: [], pip-packages: ["torch==1.2.0", "torchvision==0.4.1", "xtlib==*"]}

boxes:
    vm10: {address: "rfernand@52.224.239.191", max-runs: 1, actions: [], setup: "local"}

dockers:
    pytorch-xtlib: {registry: "xtsandboxregistry", image: "pytorch-xtlib:latest"}

general:
    advanced-mode: true
    workspace: "ws1"
    experiment: "exper5"
    primary-metric: "test-acc"
    maximize-metric: true
    step-name: "epoch"
    authentication: "browser"
    env-vars: {MY_SETTING: 42}

code:
    code-dirs: ["$scriptdir/**", "../utils/**"]
    code-zip: "compress"
    xtlib-upload: true

hyperparameter-search:
    search-type: "random"
    max-minutes: 60

run-reports:
    columns: ["run", "created", "status", "hparams.lr", "metrics.test-acc"]
    uppercase-hdr: true

tensorboard:
    template: "{logdir}/{run}"

aml-options:
    use-gpu: true
"""


def write(path, text):
    with open(path, "w") as fh:
        fh.write(textwrap.dedent(text))
    return os.path.abspath(path)


def test_defaults_give_a_local_target_without_azure(xt_home):
    cfg = load_config(os.getcwd())
    assert cfg.get("xt-services.target") == "local"
    assert cfg.get("compute-targets.local") == {"service": "pool", "boxes": ["localhost"], "setup": "local"}
    store = cfg.get(f"external-services.{cfg.get('xt-services.storage')}")
    assert store["provider"] == "store-file" and store["path"] == f"{xt_home}/file_store"
    assert cfg.get("general.workspace") == "ws1"
    assert cfg.get("boxes.local.max-runs") is None and cfg.get("xt-services.vault") is None
    assert cfg.get("setups.local.activate") is None and cfg.get("setups.local.pip-packages") == []
    assert cfg.get("no.such.key", 7) == 7
    origin = cfg.origin("compute-targets.local.setup")
    assert origin.layer == "defaults" and origin.file == loader.DEFAULTS and origin.line > 1


def test_xt_home_defaults_to_dot_xt(monkeypatch):
    monkeypatch.delenv("XT_HOME")
    monkeypatch.delenv("XT_USER_CONFIG")
    cfg = load_config(os.getcwd())
    assert cfg.get("external-services.filestorage.path") == os.path.expanduser("~/.xt/file_store")
    assert config_files(os.getcwd())[1] == os.path.expanduser("~/.xt/xt_config.yaml")


def test_layers_merge_with_provenance(xt_home):
    user = write(xt_home / "xt_config.yaml", """\
        general:
          workspace: wsU
          experiment: expU
        compute-targets:
          local: {service: pool, boxes: [localhost, local], setup: local}
        """)
    local = write("xt_config.yaml", """\
        # local
        general:
          experiment: expL
        compute-targets:
          local:
            boxes: [local]
        """)
    assert config_files(os.getcwd()) == [loader.DEFAULTS, user, local]
    cfg = load_config(os.getcwd(), session={"general.step-name": "epoch"},
                      overrides={"xt-services.target": "local", "general.workspace": "wsC"})
    assert cfg.get("general.experiment") == "expL" and cfg.origin("general.experiment") == ("local", local, 3)
    assert cfg.get("compute-targets.local.boxes") == ["local"]          # lists replace
    assert cfg.origin("compute-targets.local.boxes") == ("local", local, 6)
    assert cfg.origin("compute-targets.local.setup") == ("user", user, 5)
    assert cfg.get("general.step-name") == "epoch" and cfg.origin("general.step-name").layer == "session"
    assert cfg.get("general.workspace") == "wsC" and cfg.origin("general.workspace").layer == "call"


def test_null_unsets_a_key():
    write("xt_config.yaml", "general:\n  primary-metric: null\nsetups:\n  other: {python: python3}\n")
    cfg = load_config(os.getcwd(), session={"setups.other": None})
    assert "general.primary-metric" not in cfg and cfg.get("general.primary-metric") is None
    assert cfg.get("setups.other") is None and cfg.get("setups.local") is not None


def test_substitutions(monkeypatch, xt_home):
    monkeypatch.setenv("MY_DATA", "/data/x")
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    write("xt_config.yaml", """\
        general:
          experiment: $username-exp
          run-cache-dir: ~/cache
        data:
          data-local: ${MY_DATA}/train
          data-share-path: ${NOT_SET_ANYWHERE}
        setups:
          local: {activate: "$call conda activate $current_conda_env"}
        """)
    cfg = load_config(os.getcwd())
    assert cfg.get("general.experiment") == "alice-exp"
    assert cfg.get("general.run-cache-dir") == os.path.expanduser("~/cache")
    assert cfg.get("data.data-local") == "/data/x/train"
    assert cfg.get("data.data-share-path") == "${NOT_SET_ANYWHERE}"
    assert cfg.get("setups.local.activate") == "$call conda activate $current_conda_env"


def test_xt_users_file_loads_unchanged():
    path = write("xt_config.yaml", XT_FILE)
    cfg = load_config(os.getcwd())
    key = cfg.get("external-services.xtsandboxstorage.key")
    assert isinstance(key, VaultRef) and key.service == "xtsandboxstorage" and key.key == "key"
    assert cfg.get("compute-targets.batch.low-pri") is True and cfg.get("compute-targets.batch.nodes") == 1
    assert cfg.get("boxes.vm10.address") == "rfernand@52.224.239.191"
    assert cfg.get("general.env-vars") == {"MY_SETTING": 42}
    assert cfg.origin("compute-targets.batch.vm-size") == ("local", path, 17)
    notes = "\n".join(cfg.notes)
    for unused in ("run-reports", "tensorboard", "aml-options", "xt-services.mongo"):
        assert f"{unused}: accepted, not used by xt_magic" in notes


def test_vault_masked_everywhere():
    write("xt_config.yaml", XT_FILE)
    ref = load_config(os.getcwd()).get("external-services.xtsandboxbatch.key")
    assert str(ref) == repr(ref) == "$vault(xtsandboxbatch)"
    session = get_session()
    shown = service.show(session)
    assert "$vault(xtsandboxbatch)" in repr(shown) and "$vault(xtsandboxbatch)" in shown._repr_html_()
    assert "$vault(xtsandboxstorage)" in repr(service.explain(session, "external-services.xtsandboxstorage.key"))
    assert service.get(session, "external-services.xtsandboxregistry.password") == "$vault(xtsandboxregistry)"


def test_literal_secret_masked_in_show_get_explain():
    write("xt_config.yaml", "external-services:\n  s: {type: storage, provider: store-file,"
                            " connection-string: TOPSECRET123}\n")
    session = get_session()
    outputs = [repr(service.show(session)), service.show(session)._repr_html_(),
               repr(service.explain(session, "external-services.s.connection-string")),
               repr(service.get(session, "external-services.s"))]
    for out in outputs:
        assert "TOPSECRET123" not in out
        assert "••••" in out


def test_dotted_names_with_dots():
    write("xt_config.yaml", "boxes:\n  10.0.0.5: {address: me@10.0.0.5, max-runs: 2}\n")
    cfg = load_config(os.getcwd(), session={"boxes.10.0.0.5.max-runs": 3})
    assert cfg.get("boxes.10.0.0.5.max-runs") == 3
    assert cfg.get("boxes.10.0.0.5.address") == "me@10.0.0.5"


@pytest.mark.parametrize("kind", service.TEMPLATE_KINDS)
def test_templates_validate(kind):
    service.create(get_session(), kind)
    cfg = load_config(os.getcwd())
    assert cfg.get("xt-services.target") in cfg.get("compute-targets")


def test_validate_file_reports_it(tmp_path):
    bad = write(tmp_path / "other.yaml", "general:\n  workspace: [x]\n")
    with pytest.raises(ConfigError, match=rf"{bad}:2: general.workspace"):
        service.validate(get_session(), bad)
    with pytest.raises(ConfigError, match="no such config file"):
        service.validate(get_session(), str(tmp_path / "missing.yaml"))
    good = write(tmp_path / "good.yaml", XT_FILE)
    assert "config OK" in repr(service.validate(get_session(), good))


def test_docs_are_up_to_date():
    with open(docs.DOC, encoding="utf-8") as fh:
        assert fh.read() == docs.render(), "run: python -m xt_magic.core.config.docs"


def test_docs_cover_every_section():
    text = docs.render()
    for section in ("external-services", "xt-services", "compute-targets", "setups", "boxes", "general",
                    "code", "after-files", "data", "model", "logging", "internal",
                    "hyperparameter-search", "early-stopping", "dockers", "azure-batch-images"):
        assert f"## {section}\n" in text
    assert "| `sbatch-directives` |" in text and "`managed-identity`" in text


def test_notes_for_vault_without_vault_service_and_unset_env():
    path = write("xt_config.yaml", "external-services:\n  s: {type: storage, provider: azure-blob-21, key: $vault}\n"
                                   "data:\n  data-local: ${XT_TEST_UNSET_VAR}\n")
    notes = load_config(os.getcwd()).notes
    assert f"{path}:2: external-services.s.key: $vault needs xt-services.vault" in "\n".join(notes)
    assert f"{path}:4: data.data-local: '${{XT_TEST_UNSET_VAR}}': environment variable not set" in notes
    assert not any("$vault" in n for n in load_config(os.getcwd(), session={
        "external-services.v": {"type": "vault", "url": "https://v.vault.azure.net/"},
        "xt-services.vault": "v"}).notes)


def test_a_config_known_valid_skips_the_schema_pass_and_a_bad_one_is_still_reported(xt_home):
    """A new kernel with a config the schema accepted before neither parses schema.yaml nor runs
    jsonschema (both remembered in $XT_HOME/cache); a changed, bad config is validated again."""
    from xt_magic.core.config import validate
    (xt_home / "xt_config.yaml").write_text("general:\n  workspace: wsC\n")
    load_config()
    assert os.listdir(xt_home / "cache" / "valid-config")
    validate._schema_file.cache_clear()
    validate.schema.cache_clear()
    validate.validator.cache_clear()
    assert load_config().get("general.workspace") == "wsC"
    assert validate.validator.cache_info().misses == 0  # no validation pass
    (xt_home / "xt_config.yaml").write_text("general:\n  workspace: 3\n")
    with pytest.raises(ConfigError, match="workspace"):
        load_config()
