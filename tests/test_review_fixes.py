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
