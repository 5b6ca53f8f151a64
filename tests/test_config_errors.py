"""Table-driven bad configs: each must raise ConfigError naming file:line and the full key path."""
import os
import textwrap

import pytest

from xt_magic.core.config import load_config
from xt_magic.core.errors import ConfigError

# (name, local xt_config.yaml, line, key path, words the message must contain)
BAD = [
    ("type-string", "general:\n  workspace: 5\n", 2, "general.workspace", "expected a string"),
    ("type-bool", "general:\n  feedback: maybe\n", 2, "general.feedback", "true or false"),
    ("unknown-section", "xt-servces:\n  target: local\n", 1, "xt-servces", "did you mean 'xt-services'"),
    ("unknown-key", "general:\n  workspce: ws2\n", 2, "general.workspce", "did you mean 'workspace'"),
    ("unknown-target-key", "compute-targets:\n  t:\n    service: pool\n    boxs: [local]\n", 4,
     "compute-targets.t.boxs", "did you mean 'boxes'"),
    ("missing-service", "compute-targets:\n  t:\n    setup: local\n", 2, "compute-targets.t",
     "missing required key 'service'"),
    ("unknown-service", "compute-targets:\n  t: {service: nope}\n", 2, "compute-targets.t.service",
     "'nope' is not defined in external-services"),
    ("unknown-setup", "compute-targets:\n  t:\n    service: pool\n    setup: locl\n", 4,
     "compute-targets.t.setup", "did you mean 'local'"),
    ("unknown-box", "compute-targets:\n  t:\n    service: pool\n    boxes: [local, gpu9]\n", 4,
     "compute-targets.t.boxes[1]", "box 'gpu9' is not defined"),
    ("service-wrong-type", "compute-targets:\n  t: {service: filestorage}\n", 2,
     "compute-targets.t.service", "of type storage, not a compute service"),
    ("storage-wrong-type", "external-services:\n  v: {type: vault, url: 'https://v.vault.azure.net/'}\n"
     "xt-services:\n  storage: v\n", 4, "xt-services.storage", "expected type storage"),
    ("target-missing", "xt-services:\n  target: nowhere\n", 2, "xt-services.target",
     "not defined in compute-targets"),
    ("vault-wrong-type", "xt-services:\n  vault: filestorage\n", 2, "xt-services.vault", "expected type vault"),
    ("enum-auth", "general:\n  authentication: magic\n", 2, "general.authentication",
     "expected one of auto, browser, device-code"),
    ("enum-did-you-mean", "code:\n  code-zip: fastt\n", 2, "code.code-zip", "did you mean 'fast'"),
    ("service-type-enum", "external-services:\n  x:\n    type: blob\n", 3, "external-services.x.type",
     "expected one of storage"),
    ("storage-no-provider", "external-services:\n  x:\n    type: storage\n", 2, "external-services.x",
     "missing required key 'provider'"),
    ("batch-no-url", "external-services:\n  b:\n    type: batch\n    key: $vault\n", 2, "external-services.b",
     "missing required key 'url'"),
    ("minimum", "boxes:\n  b:\n    address: h\n    max-runs: 0\n", 4, "boxes.b.max-runs", "at least 1"),
    ("type-int", "boxes:\n  b: {address: h, max-runs: two}\n", 2, "boxes.b.max-runs", "expected an integer"),
    ("type-list", "compute-targets:\n  t:\n    service: slurm\n    sbatch-directives: --exclusive\n", 4,
     "compute-targets.t.sbatch-directives", "expected a list"),
    ("list-item", "compute-targets:\n  t:\n    service: slurm\n    sbatch-directives:\n      - --exclusive\n"
     "      - 7\n", 6, "compute-targets.t.sbatch-directives[1]", "expected a string"),
    ("bool-lowpri", "compute-targets:\n  t:\n    service: pool\n    low-pri: sometimes\n", 4,
     "compute-targets.t.low-pri", "true or false"),
    ("yaml-syntax", "general:\n  workspace: [a, b\n  experiment: x\n", 3, None, "YAML error"),
    ("top-level-list", "- a\n- b\n", 1, None, "must be a mapping"),
    ("pip-not-list", "setups:\n  s:\n    pip-packages: 5\n", 3, "setups.s.pip-packages", "expected a list"),
    ("box-setup-ref", "boxes:\n  b: {address: h, setup: nosuch}\n", 2, "boxes.b.setup",
     "'nosuch' is not defined in setups"),
    ("docker-registry-type", "dockers:\n  d: {registry: filestorage, image: x}\n", 2, "dockers.d.registry",
     "expected type registry"),
    ("azure-image-ref", "compute-targets:\n  t: {service: pool, azure-image: ubuntu2}\n", 2,
     "compute-targets.t.azure-image", "did you mean 'ubuntu22'"),
    ("tab-indent", "general:\n\tworkspace: x\n", 2, None, "YAML error"),
    ("search-type", "hyperparameter-search:\n  search-type: gird\n", 2, "hyperparameter-search.search-type",
     "did you mean 'grid'"),
    ("section-type", "compute-targets: 5\n", 1, "compute-targets", "expected a mapping"),
    ("os-enum", "boxes:\n  b: {address: h, os: linx}\n", 2, "boxes.b.os", "did you mean 'linux'"),
    ("maximum", "early-stopping:\n  truncation-percentage: 150\n", 2, "early-stopping.truncation-percentage",
     "at most 100"),
    ("env-vars-type", "general:\n  env-vars: [A, B]\n", 2, "general.env-vars", "expected a mapping"),
]


@pytest.mark.parametrize("name,text,line,key,words", BAD, ids=[b[0] for b in BAD])
def test_bad_config(name, text, line, key, words):
    path = os.path.abspath("xt_config.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    with pytest.raises(ConfigError) as info:
        load_config(os.getcwd())
    message = str(info.value)
    hit = [p for p in info.value.problems if p.file == path and p.line == line and (key is None or p.key == key)]
    assert hit, f"no problem at {path}:{line} {key}: {message}"
    assert f"{path}:{line}" in message
    if key:
        assert f"{path}:{line}: {key}:" in message
    assert words in message


def test_all_problems_reported_at_once():
    with open("xt_config.yaml", "w") as fh:
        fh.write(textwrap.dedent("""\
            general:
              workspace: 5
              feedbak: true
            compute-targets:
              t: {service: nope, setup: nosuch}
            """))
    with pytest.raises(ConfigError) as info:
        load_config(os.getcwd())
    keys = {p.key for p in info.value.problems}
    assert {"general.workspace", "general.feedbak", "compute-targets.t.service",
            "compute-targets.t.setup"} <= keys
    assert str(info.value).startswith("4 problems")


def test_yaml_error_names_column():
    with open("xt_config.yaml", "w") as fh:
        fh.write("general:\n  workspace: 'unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(os.getcwd())
    p = info.value.problems[0]
    assert p.file.endswith("xt_config.yaml") and p.line and p.column


def test_error_in_user_file_points_at_it(xt_home):
    user = xt_home / "xt_config.yaml"
    user.write_text("# mine\ngeneral:\n  experiment: [1]\n")
    with pytest.raises(ConfigError, match=rf"{user}:3: general.experiment: expected a string"):
        load_config(os.getcwd())


def test_secret_values_never_in_errors():
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n  s: {type: storage, provider: store-file, key: 987654321}\n")
    with pytest.raises(ConfigError) as info:
        load_config(os.getcwd())
    assert "987654321" not in str(info.value)
    assert "external-services.s.key" in str(info.value)


def test_short_render_in_notebook():
    with open("xt_config.yaml", "w") as fh:
        fh.write("general:\n  workspace: 5\n")
    try:
        load_config(os.getcwd())
    except ConfigError as err:
        lines = err._render_traceback_()
    assert len(lines) == 1 and "Traceback" not in lines[0] and "xt_config.yaml:2" in lines[0]
