"""Regression tests for defects found in review: each fails without its fix."""
import pytest

from xt_magic.core.errors import ConfigError


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
    assert seen["hp"] == ["lr=[0.01, 0.1]"]
    assert seen["env"] == {"MSG": "hello world", "B": "x"}
    assert seen["tags"] == {"note": "two words"}
    from xt_magic.core.jobs.sweeps import parse_hp_args
    assert parse_hp_args(seen["hp"]) == {"lr": [0.01, 0.1]}
