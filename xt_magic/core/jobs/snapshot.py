"""Code snapshots: code-dirs minus the built-in omit rules, code-omit and .gitignore, zipped
deterministically and stored content-addressed as ``snapshots/{sha256}.zip`` so an unchanged tree
stores nothing new.

A snapshot goes to a store other people may read, so files that carry credentials are left out
whatever the config says (:data:`SECRET_OMIT`; a ``!pattern`` in code-omit brings one back on
purpose), and a home directory is never snapshotted whole. ``--dry-run`` lists what was left out
and which rule did it."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass, field

from ..errors import JobError

_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same files -> same bytes -> same sha

#: gitignore patterns of files and folders that hold credentials: never snapshotted by default
SECRET_OMIT = (
    ".ssh/", ".azure/", ".aws/", ".gnupg/", ".kube/", ".kaggle/", "**/.config/gcloud/",
    "**/.docker/config.json", ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc",
    ".env", ".env.*", ".envrc", "*.pem", "*.key", "*.pfx", "*.p12",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    "msal_token_cache*", "*token_cache*", "**/huggingface/token", "**/huggingface/stored_tokens",
    "xt_config.yaml*",
)
#: never part of code: VCS data and Jupyter's autosaves (a notebook save must not make a new
#: snapshot)
ALWAYS_OMIT = (".git", ".ipynb_checkpoints/")


@dataclass
class Snapshot:
    """What a snapshot holds (``files``: sorted (name, size)); ``sha256``/``path`` once built."""

    files: list[tuple[str, int]] = field(default_factory=list)
    omitted: list[tuple[str, str]] = field(default_factory=list)  # (name, the rule that did it)
    sha256: str | None = None
    path: str | None = None
    new_bytes: int = 0          # bytes this call wrote to the store (0 when already there)

    @property
    def total(self) -> int:
        return sum(size for _, size in self.files)

    def biggest(self, n: int = 5) -> list[tuple[str, int]]:
        return sorted(self.files, key=lambda f: -f[1])[:n]

    def describe(self, limit: int = 50) -> str:
        lines = [f"code snapshot: {len(self.files)} files, {human(self.total)}"]
        lines += [f"  {human(size):>9}  {name}" for name, size in self.files[:limit]]
        if len(self.files) > limit:
            lines.append(f"  ... and {len(self.files) - limit} more")
        if self.omitted:
            lines.append(f"left out: {len(self.omitted)}")
            lines += [f"  {name}  ({why})" for name, why in self.omitted[:limit]]
            if len(self.omitted) > limit:
                lines.append(f"  ... and {len(self.omitted) - limit} more")
        return "\n".join(lines)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _dir_of(pattern: str, cwd: str) -> tuple[str, bool]:
    """A code-dirs entry -> (directory, recursive). ``d/**`` and ``d`` are recursive, ``d/*`` not."""
    pattern = pattern.replace("$scriptdir", cwd)
    recursive = True
    if pattern.endswith("/**"):
        pattern = pattern[:-3]
    elif pattern.endswith("/*"):
        pattern, recursive = pattern[:-2], False
    path = os.path.abspath(os.path.join(cwd, os.path.expanduser(pattern or ".")))
    return path, recursive


def _refuse_home(entry: str, root: str) -> None:
    """A home directory holds keys, tokens and history: snapshotting it whole is never meant."""
    home = os.path.realpath(os.path.expanduser("~"))
    real = os.path.realpath(root)
    if home != os.sep and (real == home or home.startswith(real.rstrip(os.sep) + os.sep)):
        what = "is" if real == home else "contains"
        raise JobError(f"code dir {entry!r} ({root}) {what} your home directory: "
                       "refusing to snapshot it", key="code.code-dirs",
                       hint="set code.code-dirs to your project folder, e.g. ~/myproject/**, "
                            "or run from there")


def collect(code_dirs: list[str], omit: list[str], cwd: str, skip_dirs: tuple = (),
            left_out: list | None = None) -> list[tuple[str, str]]:
    """(archive name, absolute file) pairs, sorted; .gitignore files are honoured at every level.
    ``skip_dirs``: absolute directories never included (the store, XT_HOME). ``left_out``, when
    given, receives (name, reason) for every file or folder a rule left out."""
    from ..config.loader import local_config_path, user_config_path
    skip = {os.path.realpath(d) for d in skip_dirs if d}
    # config files may hold literal keys (a secret saved from the config form): never shipped
    skip_files = {os.path.realpath(p) for p in (local_config_path(cwd), user_config_path())}
    # code-omit comes last so that its `!pattern` can bring back what a built-in rule left out
    rules = [*ALWAYS_OMIT, *SECRET_OMIT, *(omit or [])]
    sources = (["always left out"] * len(ALWAYS_OMIT) + ["may hold a secret"] * len(SECRET_OMIT)
               + ["code.code-omit"] * len(omit or []))
    chosen: dict[str, str] = {}
    for entry in code_dirs or []:
        root, recursive = _dir_of(entry, cwd)
        if not os.path.isdir(root):
            raise JobError(f"code dir {entry!r} is not a directory ({root})", key="code.code-dirs")
        _refuse_home(entry, root)
        rules_of = _Decisions(root, recursive)
        omit_spec = rules_of.spec(rules)
        ignores: dict[str, str] = {}
        for folder, dirs, files in os.walk(root):
            rel_dir = os.path.relpath(folder, root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            gi = os.path.join(folder, ".gitignore")
            if os.path.isfile(gi):
                with open(gi, encoding="utf-8", errors="replace") as fh:
                    ignores[rel_dir] = rules_of.spec(list(fh))

            def ignored(rel: str, is_dir: bool) -> bool:
                probe = rel + "/" if is_dir else rel
                hit = rules_of.check(omit_spec, probe)
                if hit:
                    return _note(probe, f"{sources[hit[0]]}: {rules[hit[0]]}")
                for base, spec in ignores.items():
                    if probe.startswith(base):
                        hit = rules_of.check(spec, probe[len(base):])
                        if hit:
                            return _note(probe, f"{base}.gitignore: {hit[1]}")
                return False

            def _note(probe: str, why: str) -> bool:
                if left_out is not None:
                    left_out.append((probe, why))
                return True

            dirs[:] = sorted(d for d in dirs if recursive and not ignored(rel_dir + d, True)
                             and not os.path.islink(os.path.join(folder, d))
                             and os.path.realpath(os.path.join(folder, d)) not in skip)
            for name in files:
                full = os.path.join(folder, name)
                rel = rel_dir + name
                if os.path.islink(full) or ignored(rel, False):
                    continue
                if not os.path.isfile(full):  # a socket or fifo (a kernel's ipc socket): no code
                    continue
                if os.path.realpath(full) in skip_files:
                    _note(rel, "an xt config file")
                    continue
                chosen.setdefault(rel, full)  # first code dir wins on a name clash
        rules_of.save()
    return sorted(chosen.items())


class _Decisions:
    """gitignore decisions (pathspec's ``check_file``) for one code dir, remembered in the cache
    dir. A decision is a pure function of the spec's lines and the name asked about, so it is
    kept under the sha256 of the lines; a tree listed before is listed again without pathspec,
    which costs a new kernel ~10 ms to import and every name ~50 us to match. Only this walk's
    decisions are written back, so the file follows the tree and never grows past it."""

    def __init__(self, root: str, recursive: bool):
        import json

        from ..config.cache import cache_path
        where = f"{os.path.realpath(root)}\0{recursive}".encode("utf-8", "surrogatepass")
        self.path = cache_path("snapshot-rules", hashlib.sha256(where).hexdigest() + ".json")
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.known = json.load(fh)
            if not isinstance(self.known, dict):
                self.known = {}
        except (OSError, ValueError):
            self.known = {}
        self.lines: dict[str, list] = {}
        self.compiled: dict[str, object] = {}
        self.used: dict[str, dict] = {}
        self.missed = False

    def spec(self, lines: list) -> str:
        """An id for the spec of these gitignore lines."""
        import json
        text = json.dumps([_engine(), lines]).encode("utf-8", "surrogatepass")
        key = hashlib.sha256(text).hexdigest()
        self.lines[key] = lines
        self.used.setdefault(key, {})
        return key

    def check(self, spec: str, name: str) -> list | None:
        """[pattern index, pattern] of the rule that leaves ``name`` out, or None."""
        used = self.used[spec]
        if name in used:
            return used[name]
        known = self.known.get(spec)
        if isinstance(known, dict) and name in known:
            used[name] = known[name]
            return used[name]
        self.missed = True
        if spec not in self.compiled:
            import pathspec
            self.compiled[spec] = pathspec.GitIgnoreSpec.from_lines(self.lines[spec])
        compiled = self.compiled[spec]
        hit = compiled.check_file(name)
        used[name] = [hit.index, compiled.patterns[hit.index].pattern] if hit.include else None
        return used[name]

    def save(self) -> None:
        if self.missed or sum(map(len, self.used.values())) != sum(
                len(v) for v in self.known.values() if isinstance(v, dict)):
            import json

            from ..config.cache import cache_write
            cache_write(self.path, json.dumps(self.used))


def _engine() -> list:
    """Which pathspec decides (its files' place and mtime): an upgrade may decide differently."""
    global _ENGINE
    if _ENGINE is None:
        import importlib.util
        spec = importlib.util.find_spec("pathspec")
        origin = spec.origin if spec and spec.origin else ""
        try:
            _ENGINE = [origin, os.stat(origin).st_mtime_ns]
        except OSError:
            _ENGINE = [origin, None]
    return _ENGINE


_ENGINE: list | None = None


def plan(code_dirs, omit, cwd: str, skip_dirs: tuple = ()) -> Snapshot:
    """The file list and sizes, without building anything (``--dry-run``)."""
    left_out: list[tuple[str, str]] = []
    pairs = collect(code_dirs, omit, cwd, skip_dirs, left_out)
    return Snapshot(files=[(name, os.path.getsize(full)) for name, full in pairs],
                    omitted=sorted(set(left_out)))


def build(store, code_dirs, omit, cwd: str, *, max_bytes: int | None = None,
          zip_mode: str = "fast", skip_dirs: tuple = ()) -> Snapshot | None:
    """Zip the tree and store it at ``snapshots/{sha}.zip`` unless already there; None if empty."""
    pairs = collect(code_dirs, omit, cwd, skip_dirs)
    snap = Snapshot(files=[(name, os.path.getsize(full)) for name, full in pairs])
    if not pairs:
        return None
    if max_bytes is not None and snap.total > max_bytes:
        worst = ", ".join(f"{n} ({human(s)})" for n, s in snap.biggest())
        raise JobError(f"code snapshot is {human(snap.total)}, over the {human(max_bytes)} limit; "
                       f"biggest: {worst}", key="code.max-snapshot-mb",
                       hint="add them to code-omit or .gitignore, or raise code.max-snapshot-mb")
    method = zipfile.ZIP_STORED if zip_mode == "none" else zipfile.ZIP_DEFLATED
    level = 9 if zip_mode == "compress" else (None if method == zipfile.ZIP_STORED else 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method, compresslevel=level) as zf:
        for name, full in pairs:
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with open(full, "rb") as fh:
                zf.writestr(info, fh.read())
    data = buf.getvalue()
    snap.sha256 = hashlib.sha256(data).hexdigest()
    snap.path = f"snapshots/{snap.sha256}.zip"
    if not store.exists(snap.path):
        store.write_bytes(snap.path, data)
        snap.new_bytes = len(data)
    return snap
