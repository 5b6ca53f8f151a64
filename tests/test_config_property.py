"""Property tests: random and mutated configs only ever raise XTError (never a crash)."""
import os

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from xt_magic.core.config import load_config, service
from xt_magic.core.errors import XTError
from xt_magic.core.session import Session

from test_config import XT_FILE

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
WORDS = ["external-services", "xt-services", "compute-targets", "setups", "boxes", "general", "code",
         "local", "pool", "slurm", "service", "setup", "boxes", "type", "storage", "batch", "vault",
         "provider", "store-file", "key", "url", "max-runs", "workspace", "target", "address",
         "localhost", "filestorage", "$vault", "${XT_HOME}", "$username", "~", "10.0.0.5", "run-reports"]
keys = st.sampled_from(WORDS) | st.text(max_size=8)
scalars = (st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True)
           | st.sampled_from(WORDS) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=25)
configs = st.dictionaries(st.sampled_from(WORDS) | keys, values, max_size=6)


def load_only_xterror(text: str):
    with open("xt_config.yaml", "w", encoding="utf-8") as fh:
        fh.write(text)
    try:
        cfg = load_config(os.getcwd())
    except XTError:
        return None
    repr(service.render(cfg, service.mask(cfg.data), "t"))  # showing a valid config never fails
    return cfg


@SETTINGS
@given(configs)
def test_random_configs_raise_only_xterror(data):
    load_only_xterror(yaml.safe_dump(data, allow_unicode=True))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(XT_FILE)), st.integers(0, 3),
                          st.sampled_from(list(":{}[]-\t\n'\"#&*!|>%@`, ?") + ["$vault", "  ", "null"])),
                min_size=1, max_size=4))
def test_mutated_xt_file_raises_only_xterror(edits):
    text = XT_FILE
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    load_only_xterror(text)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["general.workspace", "compute-targets.local.max-runs",
                                        "compute-targets.local.boxes", "general.env-vars", "boxes.x",
                                        "xt-services.target", "nosuch.key", "general", ""]) | st.text(max_size=12),
                       st.text(max_size=12) | st.sampled_from(["null", "[1, 2", "{a: [", "3", "true"]),
                       max_size=3))
def test_random_session_sets_raise_only_xterror(assignments):
    session = Session(os.getcwd())
    try:
        service.set_values(session, assignments)
    except XTError:
        assert session.values == {}


def test_a_list_or_mapping_as_a_key_is_a_one_line_error():
    """Found by the mutation test: ``? {a: [1]}`` made a key ruamel cannot hash (a TypeError)."""
    import pytest
    from xt_magic.core.errors import ConfigError
    with open("xt_config.yaml", "w", encoding="utf-8") as fh:
        fh.write("general:\n  workspace: ws\ncompute-targets:\n  ? {a: [1]}\n  : 1\n")
    with pytest.raises(ConfigError, match=r"xt_config.yaml:4: .*compute-targets is a list or "
                                          r"mapping, not a name"):
        load_config(os.getcwd())
