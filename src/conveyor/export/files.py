"""Exported files, written the way every export writes them: whole or not at all, never over a
file someone else just created unless asked, readable by the build tools that use them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from conveyor.exceptions import ExportError

__all__ = ["read_existing", "under", "write_file"]


def under(root: Path, path: Path) -> Path:
    """``path`` taken from ``root`` when relative, with its folder resolved."""
    full = root / Path(path)
    return full.parent.resolve() / full.name if full.name else full.resolve()


def read_existing(path: Path) -> bytes | None:
    """The file's bytes, or None when there is none."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ExportError(f"Cannot read {str(path)!r}: {exc.strerror or exc}.") from exc


def write_file(target: Path, text: str, *, replace: bool) -> None:
    """Write through a temp file beside ``target``; unless ``replace``, never replace a file."""
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600; these files are read by build tools
        if replace:
            os.replace(tmp, target)
        else:
            # A hard link fails if the name exists, so a file created since the caller looked is
            # never overwritten; the temp name is removed below.
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise ExportError(
                    f"{str(target)!r} already exists; pass --force to replace it."
                ) from None
            except OSError:  # a file system without hard links
                os.replace(tmp, target)
    except OSError as exc:
        raise ExportError(f"Cannot write {str(target)!r}: {exc.strerror or exc}.") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
