"""The SSH layer against a real sshd on loopback: commands, SFTP, reuse, host-key checks, trust."""
from __future__ import annotations

import os

import pytest

from xt_magic.core.compute import ssh
from xt_magic.core.errors import TargetError

pytestmark = pytest.mark.sshd


def make_box(server, name="b1", **kw) -> ssh.Box:
    return ssh.Box(name=name, host="127.0.0.1", port=server.port, user=server.user,
                   key_file=server.key_file, **kw)


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    ssh.close()


def test_run_argv_roundtrip_and_reuse(sshd, xt_home):
    sshd.trust(xt_home)
    box = make_box(sshd)
    weird = ["a b", "it's", 'q"uote', "$(touch /tmp/never)", "semi;colon", "new\nline", "*"]
    res = ssh.run(box, ["printf", "%s\\0"] + weird)
    assert res.stdout.split("\0")[:-1] == weird
    conn = ssh._loop().conns[ssh._conn_key(box)]
    ssh.run(box, ["true"])
    assert ssh._loop().conns[ssh._conn_key(box)] is conn  # one connection reused


def test_nonzero_exit_is_target_error_with_code_and_stderr(sshd, xt_home):
    sshd.trust(xt_home)
    with pytest.raises(TargetError, match=r"exited with 3: boom"):
        ssh.run_script(make_box(sshd), "echo boom >&2; exit 3")
    assert ssh.run(make_box(sshd), ["false"], check=False).exit_status == 1


def test_sftp_put_and_get(sshd, xt_home, tmp_path):
    sshd.trust(xt_home)
    box = make_box(sshd)
    target = str(tmp_path / "remote" / "deep" / "f.bin")
    ssh.put_files(box, {target: b"\x00payload\xff"})
    assert open(target, "rb").read() == b"\x00payload\xff"
    assert ssh.get_file(box, target) == b"\x00payload\xff"
    assert ssh.get_file(box, target + ".missing") is None


def test_unknown_host_refused_with_trust_hint(sshd):
    with pytest.raises(TargetError) as info:
        ssh.run(make_box(sshd), ["true"])
    assert "unknown host" in str(info.value) and "%xt_boxes --trust b1" in str(info.value)


def test_host_key_mismatch_refused(sshd_factory, xt_home):
    one, other = sshd_factory(), sshd_factory()
    # record the OTHER server's key under this server's host:port
    with open(os.path.join(str(xt_home), "known_hosts"), "w") as fh:
        fh.write(other.known_hosts_line().replace(f":{other.port}", f":{one.port}"))
    with pytest.raises(TargetError, match="host key mismatch"):
        ssh.run(make_box(one), ["true"])
    # a wrong pinned key is refused too, a right one accepted
    with pytest.raises(TargetError, match="host key mismatch"):
        ssh.run(make_box(one, host_key=other.host_pub), ["true"])
    assert ssh.run(make_box(one, name="pinned", host_key=one.host_pub), ["echo", "ok"]).stdout == "ok\n"


def test_trust_records_fingerprint_then_connects(sshd, xt_home):
    box = make_box(sshd)
    info = ssh.trust(box)
    assert info["fingerprint"].startswith("SHA256:")
    assert info["recorded"] == os.path.join(str(xt_home), "known_hosts")
    assert oct(os.stat(info["recorded"]).st_mode & 0o777) == "0o600"
    assert ssh.run(box, ["echo", "hi"]).stdout == "hi\n"
    assert ssh.trust(box)["recorded"] == "already trusted"


def test_trust_refuses_to_replace_a_different_key(sshd_factory, xt_home):
    one, other = sshd_factory(), sshd_factory()
    with open(os.path.join(str(xt_home), "known_hosts"), "w") as fh:
        fh.write(other.known_hosts_line().replace(f":{other.port}", f":{one.port}"))
    with pytest.raises(TargetError, match="differs from the key already trusted"):
        ssh.trust(make_box(one))


def test_box_down_is_unreachable_error(sshd, xt_home):
    sshd.trust(xt_home)
    sshd.stop()
    with pytest.raises(TargetError, match="unreachable"):
        ssh.run(make_box(sshd), ["true"])


def test_reconnects_after_sshd_restart(sshd, xt_home):
    sshd.trust(xt_home)
    box = make_box(sshd)
    assert ssh.run(box, ["echo", "1"]).stdout == "1\n"
    conn = ssh._loop().conns[ssh._conn_key(box)]
    sshd.stop()  # kills the open session too
    sshd.start()
    assert ssh.run(box, ["echo", "2"]).stdout == "2\n"
    assert ssh._loop().conns[ssh._conn_key(box)] is not conn


def test_parse_address():
    assert ssh.parse_address("me@host.example:2222") == ("me", "host.example", 2222)
    assert ssh.parse_address("host") == (None, "host", 22)
    assert ssh.parse_address("u@[::1]:22") == ("u", "::1", 22)
    for bad in ("u@h;rm -rf /", "u@$(x)", "a b@h", "u@"):
        with pytest.raises(ValueError):
            ssh.parse_address(bad)
