"""The SSH layer (asyncssh) shared by the pool and Slurm-over-SSH backends.

- Commands are argument lists joined with ``shlex.quote`` (:func:`run`), or POSIX ``sh`` scripts the
  caller built from quoted pieces (:func:`run_script`, always ``sh -c`` so the login shell does not
  matter). Nothing user-supplied is ever pasted into a command unquoted.
- Host keys are always verified: against a pinned ``host-key`` in the box entry, else against
  ``$XT_HOME/known_hosts`` and ``~/.ssh/known_hosts``. An unknown host is a :class:`TargetError` that
  says how to trust it (``%xt_boxes --trust BOX``, which calls :func:`trust`); nothing is ever
  accepted silently.
- One connection (and one SFTP session) per box is kept and reused; a dropped connection is
  re-opened once on the next call.
- asyncssh runs on one private event loop in a daemon thread, so these synchronous functions work
  inside a Jupyter kernel whose own loop is already running.
"""
from __future__ import annotations

# asyncio is imported where used: validation and the docs import this module (via pool and
# slurm) in every kernel, and asyncio alone costs a new one ~10-25 ms
import getpass
import os
import re
import shlex
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, TargetError, require
from ..paths import xt_home

DEFAULT_TIMEOUT = 60.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(value: str, what: str) -> str:
    """Job/run ids and other names that become remote path segments: a strict safe alphabet."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise TargetError(f"{what} {value!r} is not a safe name",
                          hint="use letters, digits, '.', '_' and '-' only")
    return value


@dataclass(frozen=True)
class Box:
    """One ``boxes:`` entry, resolved."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    host_key: str | None = None      # pinned public key: "ssh-ed25519 AAAA..."
    max_runs: int | None = None      # None: the box's cores
    setup: str | None = None
    python: str = "python3"
    work_dir: str = ".xt/work"      # relative paths are relative to the remote home directory
    connect_timeout: float = 10.0

    @property
    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def python_argv(self) -> list[str]:
        return shlex.split(self.python)


def parse_address(address: str) -> tuple[str | None, str, int]:
    """``user@host[:port]`` (``[v6addr]:port`` too) -> (user, host, port)."""
    user, _, rest = address.rpartition("@")
    port = 22
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", rest)
    if m:
        host, port_s = m.group(1), m.group(2)
    else:
        host, _, port_s = rest.partition(":") if rest.count(":") == 1 else (rest, "", "")
    if port_s:
        port = int(port_s)
    if not host or not re.fullmatch(r"[A-Za-z0-9.:_-]+", host) or (user and not _SAFE_NAME.match(user)):
        raise ValueError(f"bad box address {address!r}")
    return user or None, host, port


def box_from_config(cfg, name: str, default_max_runs: int | None = None) -> Box:
    """The Box for ``boxes.NAME`` (ConfigError naming the key when it is missing or wrong)."""
    entry = cfg.get(f"boxes.{name}") if isinstance(name, str) else None
    if not isinstance(entry, dict) or not entry.get("address"):
        known = ", ".join(sorted(cfg.get("boxes") or {}))
        raise ConfigError(f"no box {name!r} with an address", key=f"boxes.{name}",
                          hint=f"known boxes: {known}")
    try:
        user, host, port = parse_address(str(entry["address"]))
    except ValueError as err:
        raise ConfigError(str(err), key=f"boxes.{name}.address",
                          hint="use user@host or user@host:port") from None
    key_file = entry.get("key-file")
    work_dir = str(entry.get("work-dir") or ".xt/work")
    if work_dir.startswith("~/"):  # quoted paths get no tilde expansion: relative = from home
        work_dir = work_dir[2:]
    return Box(name=name, host=host, port=int(entry.get("port") or port),
               user=user or getpass.getuser(),
               key_file=os.path.expanduser(key_file) if key_file else None,
               host_key=entry.get("host-key"),
               max_runs=entry.get("max-runs") or default_max_runs,
               setup=entry.get("setup"), python=str(entry.get("python") or "python3"),
               work_dir=work_dir)


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str


# ---- host keys ------------------------------------------------------------------------------

def known_hosts_files() -> list[str]:
    """$XT_HOME/known_hosts (where :func:`trust` records) then the user's ~/.ssh/known_hosts."""
    files = [os.path.join(xt_home(), "known_hosts"), os.path.expanduser("~/.ssh/known_hosts")]
    return [f for f in files if os.path.isfile(f)]


def _trust_hint(box: Box) -> str:
    return (f"check the fingerprint with the box's admin, then run `%xt_boxes --trust {box.name}` "
            f"(records it in {os.path.join(xt_home(), 'known_hosts')}) or pin it as "
            f"boxes.{box.name}.host-key")


def _asyncssh():
    """asyncssh, or one line naming the ssh extra."""
    return require("asyncssh", "asyncssh", "ssh", "SSH targets (pool, Slurm over SSH)")


def _trusted_keys(box: Box):
    """(host keys, CA keys, revoked keys) trusted for this box; TargetError if none."""
    asyncssh = _asyncssh()
    if box.host_key:
        try:
            return [asyncssh.import_public_key(box.host_key)], [], []
        except (asyncssh.KeyImportError, ValueError) as err:
            raise ConfigError(f"host-key is not an OpenSSH public key: {err}",
                              key=f"boxes.{box.name}.host-key") from None
    keys, cas, revoked = [], [], []
    for path in known_hosts_files():
        try:
            match = asyncssh.read_known_hosts(path).match(box.host, box.host, box.port)
        except (ValueError, OSError) as err:
            raise TargetError(f"cannot read {path}: {err}") from None
        keys += match[0]
        cas += match[1]
        revoked += match[2]
    if not keys and not cas:
        raise TargetError(f"box {box.name!r} ({box.label}) is an unknown host: its SSH host key "
                          "is in no known_hosts file and no host-key is pinned",
                          hint=_trust_hint(box))
    return keys, cas, revoked


def _known_hosts_pattern(box: Box) -> str:
    return box.host if box.port == 22 else f"[{box.host}]:{box.port}"


def trust(box: Box) -> dict:
    """Fetch the box's host key, show its fingerprint and record it in $XT_HOME/known_hosts.

    Refuses (TargetError) when a different key is already trusted for the box: that is either a
    reinstalled box or an attack, and only a person can tell which.
    """
    import asyncio
    asyncssh = _asyncssh()

    async def fetch():
        return await asyncio.wait_for(asyncssh.get_server_host_key(box.host, box.port),
                                      box.connect_timeout)
    try:
        key = _loop().call(fetch(), box.connect_timeout + 5)
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as err:
        raise TargetError(f"box {box.name!r} ({box.label}) unreachable: {_describe(err)}") from err
    if key is None:
        raise TargetError(f"box {box.name!r} sent no host key")
    fingerprint = key.get_fingerprint("sha256")
    line = key.export_public_key("openssh").decode().split()
    info = {"box": box.name, "address": box.label, "key_type": line[0], "fingerprint": fingerprint}
    try:
        trusted = _trusted_keys(box)[0]
    except TargetError:
        trusted = []
    if trusted:
        if any(k.public_data == key.public_data for k in trusted):
            return {**info, "recorded": "already trusted"}
        raise TargetError(f"box {box.name!r} ({box.label}) now presents {fingerprint}, which "
                          "differs from the key already trusted for it",
                          hint="if the box was reinstalled, remove its old line from "
                               f"{', '.join(known_hosts_files()) or 'the pinned host-key'} and trust again")
    path = os.path.join(xt_home(), "known_hosts")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(f"{_known_hosts_pattern(box)} {line[0]} {line[1]}\n")
    return {**info, "recorded": path}


# ---- the loop thread and connections ------------------------------------------------------

class _Loop:
    """One asyncio loop in a daemon thread; synchronous callers submit coroutines to it."""

    def __init__(self):
        import asyncio
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="xt-ssh", daemon=True)
        self.thread.start()
        self.conns: dict[tuple, Any] = {}
        self.sftps: dict[tuple, Any] = {}
        self.locks: dict[tuple, asyncio.Lock] = {}

    def call(self, coro, timeout: float | None):
        import asyncio
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise asyncio.TimeoutError() from None


_LOOP: _Loop | None = None
_LOOP_LOCK = threading.Lock()


def _loop() -> _Loop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = _Loop()
        return _LOOP


def _conn_key(box: Box) -> tuple:
    return (box.host, box.port, box.user, box.key_file, box.host_key)


def _describe(err: BaseException) -> str:
    import asyncio
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    text = str(err) or type(err).__name__
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


async def _connection(box: Box, fresh: bool = False):
    import asyncio
    asyncssh = _asyncssh()
    lp = _loop()
    key = _conn_key(box)
    lock = lp.locks.setdefault(key, asyncio.Lock())
    async with lock:
        conn = lp.conns.get(key)
        if conn is not None and (fresh or conn.is_closed()):
            conn.close()
            lp.conns.pop(key, None)
            lp.sftps.pop(key, None)
            conn = None
        if conn is None:
            hosts, cas, revoked = _trusted_keys(box)
            options: dict[str, Any] = {}
            if box.key_file:
                options["client_keys"] = [box.key_file]
            try:
                conn = await asyncio.wait_for(asyncssh.connect(
                    box.host, box.port, username=box.user, known_hosts=(hosts, cas, revoked),
                    keepalive_interval=10, keepalive_count_max=3, **options), box.connect_timeout)
            except asyncssh.HostKeyNotVerifiable as err:
                raise TargetError(
                    f"box {box.name!r} ({box.label}): host key mismatch, refusing to connect "
                    f"({_describe(err)})",
                    hint="someone may be intercepting the connection; if the box was reinstalled, "
                         "remove its old known_hosts line (or host-key) and trust it again") from err
            except asyncssh.PermissionDenied as err:
                raise TargetError(f"box {box.name!r} ({box.label}): SSH authentication failed",
                                  hint=f"check boxes.{box.name}.key-file and the box's "
                                       "authorized_keys") from err
            except (OSError, asyncio.TimeoutError, asyncssh.Error) as err:
                raise TargetError(f"box {box.name!r} ({box.label}) unreachable: "
                                  f"{_describe(err)}") from err
            lp.conns[key] = conn
        return conn


def _with_retry(box: Box, op, timeout: float | None):
    """Run ``op(conn)`` on the box's cached connection; reconnect once if it had dropped."""
    import asyncio
    asyncssh = _asyncssh()

    async def go():
        for attempt in (0, 1):
            conn = await _connection(box, fresh=attempt == 1)
            try:
                return await op(conn)
            except (asyncssh.ConnectionLost, asyncssh.ChannelOpenError, BrokenPipeError,
                    ConnectionResetError) as err:
                if attempt == 1:
                    raise TargetError(f"box {box.name!r} ({box.label}): connection lost: "
                                      f"{_describe(err)}") from err
    try:
        return _loop().call(go(), timeout)
    except asyncio.TimeoutError as err:
        raise TargetError(f"box {box.name!r} ({box.label}): no answer within {timeout:g}s") from err
    except asyncssh.Error as err:
        raise TargetError(f"box {box.name!r} ({box.label}): {_describe(err)}") from err


def join(argv: list[str]) -> str:
    """A command line that the remote shell splits back into exactly ``argv``."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def run(box: Box, argv: list[str], *, input: str | None = None, check: bool = True,
        timeout: float = DEFAULT_TIMEOUT) -> Result:
    """Run ``argv`` on the box. With ``check``, a non-zero exit is a TargetError with the code and
    the last line of stderr."""
    command = join(argv)

    async def op(conn):
        return await conn.run(command, input=input, check=False)
    res = _with_retry(box, op, timeout)
    result = Result(res.exit_status if res.exit_status is not None else -1,
                    _text(res.stdout), _text(res.stderr))
    if check and result.exit_status != 0:
        tail = (result.stderr.strip().splitlines() or [""])[-1]
        raise TargetError(f"box {box.name!r}: {argv[0]} exited with {result.exit_status}"
                          + (f": {tail}" if tail else ""))
    return result


def run_script(box: Box, script: str, **kw) -> Result:
    """Run a POSIX sh script (built by the caller from ``shlex.quote``d pieces) on the box."""
    return run(box, ["sh", "-c", script], **kw)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


async def _sftp(conn, key):
    lp = _loop()
    sftp = lp.sftps.get(key)
    if sftp is None:
        sftp = await conn.start_sftp_client()
        lp.sftps[key] = sftp
    return sftp


def put_files(box: Box, files: dict[str, bytes], *, mode: int | None = None,
              dir_mode: int | None = None, once: bool = False,
              timeout: float = DEFAULT_TIMEOUT) -> None:
    """Write ``{remote path: bytes}`` over SFTP, creating parent directories. ``mode``: the
    files are created with it (0600 for a launch secret: never readable by others, not even
    briefly), and set to it if they existed; ``dir_mode``: their directory gets it (0700 for a
    directory of secrets). ``once``: content-addressed files, left alone when they exist and
    written whole or not at all (a temporary name, then renamed)."""
    asyncssh = _asyncssh()
    key = _conn_key(box)
    attrs = asyncssh.SFTPAttrs(permissions=mode) if mode is not None else asyncssh.SFTPAttrs()

    async def op(conn):
        sftp = await _sftp(conn, key)
        for path, data in files.items():
            if once and await sftp.exists(path):
                continue
            parent = os.path.dirname(path)
            if parent:
                await sftp.makedirs(parent, exist_ok=True)
                if dir_mode is not None:
                    await sftp.chmod(parent, dir_mode)
            target = f"{path}.tmp-{os.urandom(6).hex()}" if once else path
            async with sftp.open(target, "wb", attrs) as fh:
                await fh.write(data)
            if mode is not None:
                await sftp.chmod(target, mode)
            if once:
                await sftp.posix_rename(target, path)
    _with_retry(box, op, timeout)


def get_file(box: Box, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> bytes | None:
    """Read a remote file over SFTP (None if it does not exist)."""
    asyncssh = _asyncssh()
    key = _conn_key(box)

    async def op(conn):
        sftp = await _sftp(conn, key)
        try:
            async with sftp.open(path, "rb") as fh:
                return await fh.read()
        except asyncssh.SFTPNoSuchFile:
            return None
    return _with_retry(box, op, timeout)


def close(box: Box | None = None) -> None:
    """Close the cached connection of one box (or all)."""
    lp = _LOOP
    if lp is None:
        return
    keys = [_conn_key(box)] if box else list(lp.conns)

    async def go():
        for key in keys:
            lp.sftps.pop(key, None)
            conn = lp.conns.pop(key, None)
            if conn is not None:
                conn.close()
    try:
        lp.call(go(), 10)
    except Exception:  # closing is best effort
        pass


def box_for(cfg, name: str, target: dict | None = None) -> Box:
    """The Box for a ``boxes:`` name (or a bare ``user@host[:port]`` address in a target)."""
    entry = cfg.get(f"boxes.{name}") if cfg is not None else None
    if isinstance(entry, dict):
        box = box_from_config(cfg, name, (target or {}).get("max-runs"))
    else:
        try:
            user, host, port = parse_address(name)
        except ValueError as err:
            raise TargetError(f"{err}", hint="name a boxes: entry or use user@host[:port]") from None
        box = Box(name=name, host=host, port=port, user=user or getpass.getuser(),
                  max_runs=(target or {}).get("max-runs"))
    return box
