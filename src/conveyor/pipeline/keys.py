"""Cache keys: a step's key is the hash of everything that can change what it produces.

The parts are its code (the function's module source and the project modules it imports,
transitively, or the shell command), its params, the hashes of its inputs, and the environment
lock (Python version and installed distributions). The parts are stored beside the key so that
`conveyor status` can say *which* of them changed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SKIP_DIRS = {"site-packages", "dist-packages", "node_modules", "__pycache__"}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest_of(parts: Any) -> str:
    return hashlib.sha256(canonical(parts).encode()).hexdigest()


# -- environment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvLock:
    python: str
    packages: tuple[str, ...]  # "name==version", sorted
    hash: str


def env_lock() -> EnvLock:
    """Python version plus every installed distribution, read from ``*.dist-info`` names.

    Listing site-packages costs about a millisecond, where importlib.metadata costs ~50 ms.
    """
    packages: set[str] = set()
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        if os.path.isfile(os.path.join(os.path.dirname(entry), "__init__.py")):
            continue  # a library's vendored folder (ray/thirdparty_files), not an environment
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                stem = name.rsplit(".", 1)[0]
                dist, _, version = stem.partition("-")
                packages.add(f"{dist.lower().replace('_', '-')}=={version}")
    python = f"{sys.implementation.name} {sys.version.split()[0]}"
    ordered = tuple(sorted(packages))
    h = hashlib.sha256(canonical([python, ordered]).encode()).hexdigest()
    return EnvLock(python=python, packages=ordered, hash=h)


# -- code ----------------------------------------------------------------------------------


class CodeHasher:
    """Hashes a module's source and the project-local modules it imports.

    Parsing results are cached by (size, mtime_ns, inode) in the state DB, so an unchanged tree
    is never re-parsed.
    """

    def __init__(self, root: Path, state: Any | None = None) -> None:
        self.root = root.resolve()
        self.state = state
        self.search = [p for p in (self.root / "src", self.root) if p.is_dir()]
        self._memo: dict[str, tuple[str, list[str]]] = {}

    def module_file(self, module: str) -> Path | None:
        """The file of a module inside the project, or None if it lives elsewhere."""
        rel = Path(*module.split("."))
        for base in self.search:
            for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
                if candidate.is_file():
                    return candidate
        return None

    def closure(self, module: str) -> dict[str, str]:
        """relative path → sha256 for the module and every project module it reaches."""
        start = self.module_file(module)
        if start is None:
            return self._external(module)
        seen: dict[str, str] = {}
        todo = [start]
        while todo:
            path = todo.pop()
            rel = path.relative_to(self.root).as_posix()
            if rel in seen:
                continue
            sha, imports = self._parse(path)
            seen[rel] = sha
            for name in imports:
                found = self.module_file(name)
                if found is not None and not _skipped(found, self.root):
                    todo.append(found)
        return dict(sorted(seen.items()))

    def files(self, module: str) -> list[Path]:
        return [self.root / rel for rel in self.closure(module) if not rel.startswith("<")]

    def _external(self, module: str) -> dict[str, str]:
        """A module outside the project: hash its file (its version is in the env lock too)."""
        import importlib.util

        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not os.path.isfile(spec.origin):
            return {f"<{module}>": "missing"}
        data = Path(spec.origin).read_bytes()
        return {f"<{module}>": hashlib.sha256(data).hexdigest()}

    def _parse(self, path: Path) -> tuple[str, list[str]]:
        st = path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        key = f"code:{path}"
        memo = self._memo.get(key)
        if memo is None and self.state is not None:
            cached = self.state.get(key)
            if cached:
                entry = json.loads(cached)
                if entry["stamp"] == stamp:
                    memo = (entry["sha"], entry["imports"])
        if memo is not None:
            self._memo[key] = memo
            return memo
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        imports = _imports(data, path, self.root)
        self._memo[key] = (sha, imports)
        if self.state is not None:
            self.state.put(key, json.dumps({"stamp": stamp, "sha": sha, "imports": imports}))
        return sha, imports


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(p in SKIP_DIRS or (p.startswith(".") and p not in (".", "..")) for p in parts)


def _imports(source: bytes, path: Path, root: Path) -> list[str]:
    """Absolute names of every module this file imports (relative imports resolved)."""
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError:
        return []  # the step will fail to import and say why; hashing must not
    package = _package_of(path, root)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            if base:
                names.add(base)
                for alias in node.names:
                    names.add(f"{base}.{alias.name}")
    # Importing a.b.c also runs a/__init__.py and a/b/__init__.py.
    for name in list(names):
        pieces = name.split(".")
        names.update(".".join(pieces[:i]) for i in range(1, len(pieces)))
    return sorted(names)


def _package_of(path: Path, root: Path) -> str:
    for base in (root / "src", root):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        else:
            parts = parts[:-1]
        return ".".join(parts)
    return ""


# -- keys ----------------------------------------------------------------------------------


def explain(old: dict | None, new: dict) -> str:
    """Say in words which parts of a key differ: the answer to 'why does this step run?'."""
    if not old:
        return "never ran"
    reasons: list[str] = []
    if old.get("run") != new.get("run") or old.get("cmd") != new.get("cmd"):
        reasons.append("command changed" if "cmd" in new else "function changed")
    old_code, new_code = old.get("code", {}), new.get("code", {})
    changed = sorted(f for f in set(old_code) | set(new_code) if old_code.get(f) != new_code.get(f))
    if changed:
        reasons.append(
            "code changed: " + ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
        )
    old_p, new_p = old.get("params", {}), new.get("params", {})
    for key in sorted(set(old_p) | set(new_p)):
        if old_p.get(key) != new_p.get(key):
            reasons.append(
                f"param {key} changed: {canonical(old_p.get(key))} → {canonical(new_p.get(key))}"
            )
    old_i, new_i = old.get("inputs", {}), new.get("inputs", {})
    for ref in sorted(set(old_i) | set(new_i)):
        if old_i.get(ref) != new_i.get(ref):
            reasons.append(f"input {ref} changed")
    if old.get("deps") != new.get("deps"):
        old_d, new_d = old.get("deps", {}), new.get("deps", {})
        files = sorted(f for f in set(old_d) | set(new_d) if old_d.get(f) != new_d.get(f))
        reasons.append("deps changed: " + ", ".join(files[:5]))
    if old.get("outs") != new.get("outs"):
        reasons.append("declared outs changed")
    if old.get("env") != new.get("env"):
        reasons.append("environment changed (Python or installed packages)")
    return "; ".join(reasons) or "forced"
