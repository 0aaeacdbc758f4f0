"""torch.compile's results shared by every stage of a campaign, through its storage.

Each stage runs in a fresh process, often on another node, and compiles its networks again
(on an H200 about 2.5 min for the update's graphs and 1 min per sampling batch shape). PyTorch's
portable cache ("mega-cache": Inductor's compiled graphs, AOTAutograd's, Triton's kernels and
autotuning results) is saved here after a stage compiled, one file per distinct set of
artifacts under `<campaign>/compile-cache/`, and every file there is loaded before a stage
compiles: graphs seen before are then looked up instead of compiled. Entries are keyed by
PyTorch on the graph, the torch version and the device, so a file made on another kind of GPU
is loaded but never used. A cache that cannot be read or written costs only a compile: it
warns and goes on.
"""

from __future__ import annotations

import hashlib
import posixpath
import warnings

import torch

from orchestrator.storage import Storage, StorageError


class CompileCache:
    """`load()` before the first compiled call, `save()` after it (it writes only artifacts the
    folder does not hold yet); `save_once()` at every log point saves at the first."""

    def __init__(self, storage: Storage | None, folder: str, *, enabled: bool = True) -> None:
        self.storage = storage if enabled else None  # None: nothing compiles, nothing to do
        self.folder = folder
        self.saved: set[str] = set()  # files in the folder (as of load) or written here
        self._once = False

    def _name(self, keys: list[str]) -> str:
        return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24] + ".bin"

    def load(self) -> int:
        """Load every file of the folder into this process's compile caches; returns how many
        loaded (PyTorch warns about and skips a file it cannot read)."""
        loaded = 0
        if self.storage is None:
            return loaded
        try:
            names = self.storage.list(self.folder)
            for name in (n for n in names if n.endswith(".bin")):
                data = self.storage.read_bytes(posixpath.join(self.folder, name))
                if data is not None:
                    self.saved.add(name)
                    loaded += torch.compiler.load_cache_artifacts(data) is not None
        except (StorageError, RuntimeError, ValueError, EOFError) as exc:
            warnings.warn(f"compile cache {self.storage.uri(self.folder)}: {exc}", stacklevel=2)
        return loaded

    def save(self) -> str | None:
        """Store what this process compiled (or looked up) so far, unless the folder has it;
        returns the file written."""
        if self.storage is None:
            return None
        got = torch.compiler.save_cache_artifacts()
        if got is None:
            return None
        data, info = got
        keys = [f"{kind}:{key}" for kind, ks in info.artifacts.items() for key in ks]
        name = self._name(keys)
        if not keys or name in self.saved:
            return None
        try:
            self.storage.write_bytes(posixpath.join(self.folder, name), data)
        except StorageError as exc:
            warnings.warn(f"compile cache: {exc}", stacklevel=2)
            return None
        self.saved.add(name)
        return name

    def save_once(self) -> None:
        if not self._once:
            self._once = True
            self.save()
