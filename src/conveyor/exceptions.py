"""Every error Conveyor raises on purpose.

Each message says what was wrong, quotes the value, and names the fix. Only the CLI prints
them (as ``Error: ...``) and picks the exit code.

    ConveyorError
    ├── ConfigError            conveyor.yaml is malformed or inconsistent (carries .issues)
    ├── ProjectError           no project here, or the project is busy (ProjectLocked)
    │   ├── ProjectLocked
    │   └── ProjectUnwritable  .conveyor/ is on a full disk, read-only, or not ours to write
    ├── StoreError             the metadata database cannot be opened, migrated or written
    │   ├── StoreBusy          a store-wide lease is held (a gc in another workspace)
    │   ├── StoreUnwritable    the database's disk is full, read-only, or not ours to write
    │   └── StoreCorrupted     the SQLite file is empty or fails its integrity check
    ├── ArtifactError          the artifact store cannot read or write an object
    │   ├── ArtifactNotFound
    │   ├── ArtifactCorrupted  the bytes no longer match their hash
    │   ├── ArtifactUnwritable the store's disk is full, read-only, or not ours to write
    │   └── ArtifactTimeout    a read did not finish in time (a FIFO, a hung network mount)
    ├── DataError              a data source is missing, unreadable or of an unknown format
    ├── PipelineError          a step cannot be loaded, run or its result stored
    │   ├── StepNotFound
    │   └── UnsupportedOutput  a step returned a value Conveyor cannot store
    ├── RunNotFound
    ├── ExecutorError          an executor (process pool, Ray) cannot start or lost a worker
    ├── RegistryError          a model version cannot be registered, found or loaded
    │   ├── ModelNotFound      no such model, version or alias
    │   ├── ModelTampered      a model file's sha256 differs from the registry record
    │   └── UnsafeModelFile    a pickle where the policy forbids it, or an untrusted type
    ├── InvalidInput           a row does not fit a model's signature (names field and row)
    ├── GatewayError           the gateway cannot start as configured (token, address)
    ├── ReleaseError           a release cannot start or move (another runs, wrong state)
    ├── MonitorError           monitoring cannot run (nothing routed, no reference)
    ├── GateError              a gate cannot be evaluated (a missing metric, a bad column)
    │   └── RegistrationRefused  conveyor.register judged the model and a gate failed (.gates)
    └── ExportError            a CI or deployment file cannot be written
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in conveyor.yaml: where it is and what was expected."""

    location: str  # dotted path such as "pipeline.train.inputs[1]"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        loc = f"{self.location}: " if self.location else ""
        return f"{loc}{self.message}{where}"


class ConfigError(ConveyorError):
    """conveyor.yaml cannot be used as written."""

    exit_code = 2

    def __init__(self, file: str, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        lines = [f"{file}: {issue}" for issue in issues]
        super().__init__("\n".join(lines))


class ProjectError(ConveyorError):
    """No project at this path, or the project cannot be used right now."""


class ProjectLocked(ProjectError):
    """Another process holds the project's run lock."""


class ProjectUnwritable(ProjectError):
    """The project's ``.conveyor/`` folder (its run lock) cannot be written: a full disk, a
    read-only mount, missing permissions; the message names the path and the fix."""


class StoreError(ConveyorError):
    """The metadata store cannot be opened, migrated, read or written."""


class StoreBusy(StoreError):
    """Another process holds a store-wide lease (such as `conveyor gc` in another workspace);
    ``holder`` says who, ``until`` when the lease expires unless renewed."""

    def __init__(self, message: str, *, holder: str = "", until: datetime | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.until = until


class StoreUnwritable(StoreError):
    """The metadata database's disk is full or read-only, or this user may not write it."""


class StoreCorrupted(StoreError):
    """The SQLite file is empty or damaged; the message names a backup to restore, or how to
    start again."""


class ArtifactError(ConveyorError):
    """The artifact store cannot read or write an object."""


class ArtifactNotFound(ArtifactError):
    """No artifact with that hash is in the store."""


class ArtifactCorrupted(ArtifactError):
    """An artifact's bytes do not match the hash that names it."""


class ArtifactUnwritable(ArtifactError):
    """The artifact store's disk is full or read-only, or this user may not write it."""


class ArtifactTimeout(ArtifactError):
    """Reading an object did not finish within the store's read timeout: the file blocks (a
    FIFO in place of an object, a hung network file system)."""


class DataError(ConveyorError):
    """A data source is missing, unreadable, or in a format Conveyor does not read."""


class PipelineError(ConveyorError):
    """A pipeline step cannot be loaded, run, or its result stored."""


class StepNotFound(PipelineError):
    """A step's ``module:function`` does not exist or cannot be imported."""


class UnsupportedOutput(PipelineError):
    """A step returned a value that has no storage format."""


class RunNotFound(ConveyorError):
    """No run with that id exists in the store."""


class ExecutorError(ConveyorError):
    """An executor cannot start, or lost a worker mid-step."""


class RegistryError(ConveyorError):
    """A model version cannot be registered, found, or loaded."""


class ModelNotFound(RegistryError):
    """No model, version or alias by that name."""


class ModelTampered(RegistryError):
    """A model file's bytes do not match the sha256 recorded when it was registered."""


class UnsafeModelFile(RegistryError):
    """A model file needs a type nobody trusted, or is a pickle where pickles are forbidden."""


class InvalidInput(ConveyorError):
    """Input rows do not fit a model's signature; ``field`` and ``row`` say where."""

    status = 422

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.row = row


class GatewayError(ConveyorError):
    """The gateway cannot start as configured (its token, its address)."""

    exit_code = 2


class ReleaseError(ConveyorError):
    """A release cannot start or change state as asked (another one runs, no such release)."""


class MonitorError(ConveyorError):
    """Monitoring cannot run as asked: nothing routed, no reference, an unknown model."""


class GateError(ConveyorError):
    """A gate cannot be evaluated: it names a metric, column or environment that is not there."""


class RegistrationRefused(GateError):
    """``conveyor.register`` judged the model and a blocking gate failed; ``gates`` holds every
    verdict (as ``conveyor models show`` prints them), and nothing was registered."""

    def __init__(self, message: str, gates: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.gates = gates


class ExportError(ConveyorError):
    """A CI workflow or deployment file cannot be written."""


# -- wrapping foreign errors at the boundary (store, SQL sources) ------------------------------


def foreign_reason(exc: BaseException) -> str:
    """The first line of a foreign error's message, without a trailing period."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
    text = str(orig if orig is not None else exc).strip()
    if not text:
        text = type(exc).__name__
    return text.splitlines()[0].strip().rstrip(".")


#: Query parameters whose value is a credential: ``?password=``, ``&sslpassword=``,
#: ``?aws_secret_access_key=``, ``?token=``, ``?api_key=``, ``?X-Amz-Signature=`` ...
_SECRET_PARAM = re.compile(
    r"([?&;](?:[^=&;#]*(?:pass|pwd|secret|token|key|credential|signature|auth)[^=&;#]*)=)"
    r"[^&;#]*",
    re.IGNORECASE,
)


def safe_url(url: str) -> str:
    """A store or database URL with its credentials hidden, fit for a message or a log.

    The password of the userinfo (``user:secret@host``) and the value of every query parameter
    named like a credential (``?password=``, ``?sslpassword=``, ``?token=``, ``?api_key=``)
    become ``***``. Parsed by hand, not by SQLAlchemy, so fsspec URLs are covered as well and
    nothing heavy is imported to print an error.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The userinfo ends at the last "@" before any query: a raw password may itself hold a
    # "/" or an "@", and hiding too much beats showing a secret.
    query = min((i for i in (rest.find("?"), rest.find("#")) if i != -1), default=len(rest))
    at = rest.rfind("@", 0, query)
    authority, tail = ("", rest) if at == -1 else (rest[:at], rest[at:])
    user, colon, _password = authority.partition(":")
    if colon:
        authority = f"{user}:***"
    shown = f"{scheme}{sep}{authority}{tail}"
    return _SECRET_PARAM.sub(r"\1***", shown)
