"""How a node reaches the store: a shared filesystem root, or one signed URL per store path.

A store hands out a :class:`NodeAccess` (``Store.node_access``); it travels to the node only in the
launch secret (never in the store), and the runner turns its JSON into file or URL I/O.
"""
from __future__ import annotations

import os


class NodeAccess:
    """Access for a node to a set of store paths."""

    kind = ""

    def merge(self, other: "NodeAccess") -> "NodeAccess":
        raise NotImplementedError

    def local_path(self, path: str) -> str | None:
        """The node-side file of a store path when the node shares a filesystem; else None."""
        return None

    def to_json(self) -> dict:
        raise NotImplementedError

    @staticmethod
    def from_json(data: dict) -> "NodeAccess":
        kind = (data or {}).get("kind")
        if kind == FileAccess.kind:
            return FileAccess(data["root"])
        if kind == UrlAccess.kind:
            return UrlAccess(data["urls"])
        raise ValueError(f"unknown node access kind {kind!r}")

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __repr__(self) -> str:  # never the URLs: they carry SAS tokens
        return f"<{type(self).__name__}>"


class FileAccess(NodeAccess):
    """The node sees the store's filesystem at the same path (no credential exists)."""

    kind = "file"

    def __init__(self, root: str):
        self.root = root

    def merge(self, other: NodeAccess) -> NodeAccess:
        if not isinstance(other, FileAccess) or other.root != self.root:
            raise ValueError("cannot merge node access to different stores")
        return self

    def local_path(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/"))

    def to_json(self) -> dict:
        return {"kind": self.kind, "root": self.root}

    def __repr__(self) -> str:
        return f"<FileAccess {self.root}>"


class UrlAccess(NodeAccess):
    """One URL per store path, each signed for exactly the operation that path needs."""

    kind = "urls"

    def __init__(self, urls: dict[str, str]):
        self.urls = dict(urls)

    def merge(self, other: NodeAccess) -> NodeAccess:
        if not isinstance(other, UrlAccess):
            raise ValueError("cannot merge node access to different stores")
        return UrlAccess({**self.urls, **other.urls})

    def to_json(self) -> dict:
        return {"kind": self.kind, "urls": dict(self.urls)}
