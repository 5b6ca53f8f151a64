"""%xt_config through IPython: show, get, explain, set (typed, validated), save, create, validate, reset."""
import os

import pytest

from xt_magic.core.errors import ConfigError
from xt_magic.core.session import get_session

COMMENTED = """\
# team settings — keep this comment
general:
    workspace: wsA      # our workspace
    experiment: e1

compute-targets:
    local: {service: pool, boxes: [localhost], setup: local}   # flow style stays
"""


def run(ip, line):
    return ip.run_line_magic("xt_config", line)


def test_show_has_values_and_origins(ip):
    out = run(ip, "")
    text = repr(out)
    assert "workspace: ws1" in text and "defaults defaults.yaml:" in text
    assert "<table>" in out._repr_html_() and "compute-targets" in out._repr_html_()
    assert "external-services" not in repr(run(ip, "general"))


def test_get_one_value_and_unknown_key(ip):
    assert run(ip, "general.workspace") == "ws1"
    assert run(ip, "compute-targets.local")["service"] == "pool"
    with pytest.raises(ConfigError, match="did you mean 'workspace'"):
        run(ip, "general.workspce")


def test_set_is_typed_by_schema(ip):
    run(ip, "general.workspace=ws2 compute-targets.local.max-runs=3 general.feedback=no "
            "compute-targets.local.boxes=local,localhost 'general.env-vars={A: 1}'")
    values = get_session().values
    assert values["compute-targets.local.max-runs"] == 3
    assert values["general.feedback"] is False
    assert values["compute-targets.local.boxes"] == ["local", "localhost"]
    assert values["general.env-vars"] == {"A": 1}
    cfg = get_session().config()
    assert cfg.get("general.workspace") == "ws2" and cfg.origin("general.workspace").layer == "session"


def test_bad_set_is_rejected_and_changes_nothing(ip):
    run(ip, "general.workspace=ws2")
    with pytest.raises(ConfigError, match=r"<session>: compute-targets.local.max-runs: expected an integer"):
        run(ip, "general.experiment=e9 compute-targets.local.max-runs=abc")
    with pytest.raises(ConfigError, match="did you mean 'workspace'"):
        run(ip, "general.workspce=x")
    with pytest.raises(ConfigError, match="did you mean 'grid'"):
        run(ip, "hyperparameter-search.search-type=gird")
    assert get_session().values == {"general.workspace": "ws2"}


def test_explain_lists_every_layer(ip, xt_home):
    (xt_home / "xt_config.yaml").write_text("general:\n  workspace: wsU\n")
    with open("xt_config.yaml", "w") as fh:
        fh.write(COMMENTED)
    run(ip, "general.workspace=wsS")
    text = repr(run(ip, "--explain general.workspace"))
    assert "general.workspace = wsS" in text
    assert "defaults.yaml:" in text
    assert f"{xt_home / 'xt_config.yaml'}:2: wsU" in text
    assert f"{os.path.abspath('xt_config.yaml')}:3: wsA" in text
    assert "session" in text.splitlines()[-1] and "<- wins" in text.splitlines()[-1]


def test_save_keeps_comments_and_layout(ip):
    with open("xt_config.yaml", "w") as fh:
        fh.write(COMMENTED)
    run(ip, "general.workspace=wsB hyperparameter-search.concurrent=2 --save")
    text = open("xt_config.yaml").read()
    assert "# team settings — keep this comment" in text
    assert "    workspace: wsB      # our workspace" in text
    assert "local: {service: pool, boxes: [localhost], setup: local}   # flow style stays" in text
    assert "hyperparameter-search:\n    concurrent: 2" in text
    assert get_session().values == {}
    cfg = get_session().config()
    assert cfg.get("general.workspace") == "wsB" and cfg.origin("general.workspace").layer == "local"
    assert cfg.get("hyperparameter-search.concurrent") == 2


def test_save_refuses_to_clobber_a_broken_file(ip):
    with open("xt_config.yaml", "w") as fh:
        fh.write("general: [unclosed\n")
    get_session().values["general.workspace"] = "x"
    with pytest.raises(ConfigError, match="xt_config.yaml:"):
        run(ip, "--save")
    assert open("xt_config.yaml").read() == "general: [unclosed\n"


def test_create_refuses_overwrite_without_force(ip):
    out = run(ip, "--create slurm")
    assert "slurm template" in repr(out)
    assert "service: slurm" in open("xt_config.yaml").read()
    with pytest.raises(ConfigError, match="exists; not overwritten .*--force"):
        run(ip, "--create local")
    assert "service: slurm" in open("xt_config.yaml").read()
    run(ip, "--create local --force")
    assert "service: slurm" not in open("xt_config.yaml").read()
    with pytest.raises(ConfigError, match="did you mean 'batch'"):
        run(ip, "--create bach")


def test_validate_and_reset(ip, tmp_path):
    assert "config OK" in repr(run(ip, "--validate"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("compute-targets:\n  t: {service: pool, setup: nope}\n")
    # a problem inside one target is listed; it stops only commands that use that target
    assert f"problem: {bad}:2: compute-targets.t.setup" in repr(run(ip, f"--validate {bad}"))
    bad.write_text("general:\n  workspace: [x]\ncompute-targets:\n  t: {service: pool, setup: nope}\n")
    with pytest.raises(ConfigError) as info:  # a problem every command meets: all are listed
        run(ip, f"--validate {bad}")
    assert {p.key for p in info.value.problems} == {"general.workspace", "compute-targets.t.setup"}
    run(ip, "general.workspace=ws3")
    assert "dropped 1 value" in repr(run(ip, "--reset"))
    assert run(ip, "general.workspace") == "ws1"


def test_errors_render_as_one_line(ip, capsys):
    with open("xt_config.yaml", "w") as fh:
        fh.write("general:\n  workspace: 5\n")
    result = ip.run_cell("%xt_config general.workspace")
    assert isinstance(result.error_in_exec, ConfigError)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "xt_config.yaml:2: general.workspace: expected a string" in text
    assert "Traceback" not in text


def test_vault_masked_in_magic_output(ip):
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n  vs: {type: storage, provider: azure-blob-21, key: $vault,"
                 " connection-string: AccountKey=SECRET99}\n")
    text = repr(run(ip, "")) + repr(run(ip, "--explain external-services.vs.key")) + \
        repr(run(ip, "external-services.vs"))
    assert "$vault(vs)" in text and "SECRET99" not in text


def test_config_show_is_a_summary_then_collapsible_sections(ip):
    shown = ip.run_line_magic("xt_config", "")
    page = shown._repr_html_()
    summary, sections = page.split("<details", 1)
    for label, value in (("target", "local"), ("store", "filestorage"), ("workspace", "ws1"),
                         ("login", "not logged in")):
        assert f">{label}</th>" in summary and value in summary
    assert "compute-targets" not in summary  # every section is folded away below the summary
    names = [part.split("</b>", 1)[0] for part in page.split("<summary><b>")[1:]]
    assert {"compute-targets", "general", "setups", "xt-services"} <= set(names)
    assert page.count("<details") == len(names) and " open" not in page
    assert "<code></code>" not in page  # a section row spans the table, no empty value box
    assert shown.text.splitlines()[1] == "# target: local (pool)"


def test_a_trailing_comment_is_not_an_argument(ip):
    """IPython passes a line magic its `# comment`; the README's cells carry comments."""
    assert ip.run_line_magic("xt_config", "general.workspace   # which workspace") == "ws1"
    assert ip.run_line_magic("xt_config", "'general.workspace'") == "ws1"
