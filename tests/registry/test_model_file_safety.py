"""A skops file runs only the names Conveyor allow-lists, whatever its record or descriptor says.

Issue 17, item 1: trusted types used to be module prefixes ("numpy"), so a file naming
``numpy.testing._private.utils.runstring`` (an exec) passed the check, and skops was handed the
record's own list. Each case below is a real skops file (a fitted estimator with one crafted
node added to its ``schema.json``) for one of skops' loader node types. The record and the
descriptor list every name the file needs, as an attacker who can write them would. Loading
must raise ``UnsafeModelFile`` before anything runs: the payloads write a marker file, which
must never appear. The cases marked live do write it when skops is told to trust their names,
so the refusal is what stops them.
"""

from __future__ import annotations

import ast
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from conveyor.exceptions import UnsafeModelFile
from conveyor.pipeline.outputs import load_output, store_return
from conveyor.registry.modelfile import ModelFile, check_trusted, load_model, save_model
from conveyor.store.artifacts import ArtifactStore

WHAT = "model 'loans' version 3"
RUNSTRING = ("numpy.testing._private.utils", "runstring")  # def runstring(astr, dict): exec(...)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore(str(tmp_path / "artifacts")) as opened:
        yield opened


# -- building skops node states by hand ------------------------------------------------------


def _node(loader: str, module: str, cls: str, **rest: Any) -> dict:
    return {"__class__": cls, "__module__": module, "__loader__": loader, **rest}


def _json(value: Any) -> dict:
    return _node("JsonNode", "builtins", "str", content=json.dumps(value), is_json=True)


def _type(module: str, name: str) -> dict:
    return _node("TypeNode", module, name)


def _function(module: str, name: str) -> dict:
    return _node("FunctionNode", module, name)


def _list(items: list[dict], module: str = "builtins", cls: str = "list") -> dict:
    return _node("ListNode", module, cls, content=items)


def _tuple(items: list[dict]) -> dict:
    return _node("TupleNode", "builtins", "tuple", content=items)


def _dict(content: dict[str, dict], key_types: list[dict] | None = None) -> dict:
    keys = key_types if key_types is not None else [_type("builtins", "str") for _ in content]
    return _node("DictNode", "builtins", "dict", content=content, key_types=_list(keys))


def _calls(callable_node: dict, argument: str) -> dict:
    """A dict whose key type is ``callable_node``: skops calls it with ``argument`` at load."""
    return _dict({argument: _json(0)}, key_types=[callable_node])


def _partial(func: dict, args: list[dict] = (), kwds: dict[str, dict] | None = None) -> dict:
    content = {
        "func": func,
        "args": _tuple(list(args)),
        "kwds": _dict(kwds or {}),
        "namespace": _json(None),
    }
    return _node("PartialNode", "functools", "partial", content=content)


def _runstring_partial() -> dict:
    return _partial(_function(*RUNSTRING), kwds={"dict": _dict({})})


def _runstring_call(code: str) -> dict:
    """runstring(code, {}), called by skops as a constructor with arguments from the file."""
    return _node("ConstructorFromReduceNode", *RUNSTRING, content=_tuple([_json(code), _dict({})]))


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def _npz() -> bytes:
    buffer = io.BytesIO()
    scipy.sparse.save_npz(buffer, scipy.sparse.csr_matrix(np.eye(2)))
    return buffer.getvalue()


@cache
def _base() -> tuple[dict, dict[str, bytes]]:
    """A genuine skops file of a fitted LogisticRegression: its schema and its other members."""
    import skops.io as sio

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    data = sio.dumps(LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        schema = json.loads(archive.read("schema.json"))
        members = {n: archive.read(n) for n in archive.namelist() if n != "schema.json"}
    return schema, members


def _craft(
    evil: dict, *, protocol: int | None = None, members: dict[str, bytes] | None = None
) -> bytes:
    """The base file with ``evil`` as one more attribute of the estimator."""
    schema, files = _base()
    schema = json.loads(json.dumps(schema))
    attrs = schema["content"]  # the DictNode of the estimator's __dict__
    attrs["content"]["evil"] = evil
    attrs["key_types"]["content"].append(_type("builtins", "str"))
    if protocol is not None:
        schema["protocol"] = protocol
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, raw in {**files, **(members or {})}.items():
            archive.writestr(name, raw)
        archive.writestr("schema.json", json.dumps(schema))
    return out.getvalue()


# -- the crafted files: at least one per loader node type ------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    node: str  # the skops loader the malicious node uses
    build: Callable[[Path], bytes]  # marker path -> file bytes
    refused: str  # a name the refusal must quote
    live: bool = False  # writes the marker when skops trusts every name in the file


def _write(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"


def _member(name: str, raw: bytes) -> dict[str, bytes]:
    return {name: raw}


CASES = [
    Case(
        "function-exec",
        "FunctionNode",
        lambda m: _craft(_calls(_function("builtins", "exec"), _write(m))),
        "builtins.exec",
        live=True,
    ),
    Case(
        "function-eval",
        "FunctionNode",
        lambda m: _craft(
            _calls(
                _function("builtins", "eval"),
                f"__import__('pathlib').Path({str(m)!r}).write_text('pwned')",
            )
        ),
        "builtins.eval",
        live=True,
    ),
    Case(
        "function-os-system",
        "FunctionNode",
        lambda m: _craft(_calls(_function("os", "system"), f"touch '{m}'")),
        "os.system",
        live=True,
    ),
    Case(
        "function-protocol-0",
        "FunctionNode",
        lambda m: _craft(
            _calls(
                _node(
                    "FunctionNode",
                    "builtins",
                    "str",
                    content={"module_path": "builtins", "function": "exec"},
                ),
                _write(m),
            ),
            protocol=0,
        ),
        "builtins.exec",
        live=True,
    ),
    Case(
        "type-exec",
        "TypeNode",
        lambda m: _craft(_calls(_type("builtins", "exec"), _write(m))),
        "builtins.exec",
        live=True,
    ),
    Case(
        "partial-runstring",
        "PartialNode",
        lambda m: _craft(_calls(_runstring_partial(), _write(m))),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "partial-exec",
        "PartialNode",
        lambda m: _craft(_calls(_partial(_function("builtins", "exec")), _write(m))),
        "builtins.exec",
        live=True,
    ),
    Case(
        "reduce-runstring",
        "ConstructorFromReduceNode",
        lambda m: _craft(_runstring_call(_write(m))),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "reduce-os-system",
        "ConstructorFromReduceNode",
        lambda m: _craft(
            _node(
                "ConstructorFromReduceNode", "os", "system", content=_tuple([_json(f"touch '{m}'")])
            )
        ),
        "os.system",
        live=True,
    ),
    Case(
        "loss-runstring",
        "LossNode",
        lambda m: _craft(
            _node(
                "LossNode",
                *RUNSTRING,
                __reduce__={"args": _tuple([_json(_write(m)), _dict({})])},
                content=_dict({}),
            )
        ),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "tree-args",
        "TreeNode",
        lambda m: _craft(
            _node(
                "TreeNode",
                "sklearn.tree._tree",
                "Tree",
                __reduce__={"args": _tuple([_runstring_call(_write(m))])},
                content=_dict({}),
            )
        ),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "quantile-forest",
        "QuantileForestNode",
        lambda m: _craft(
            _node(
                "QuantileForestNode",
                "quantile_forest._quantile_forest_fast",
                "QuantileForest",
                __reduce__={"args": _tuple([_runstring_call(_write(m))])},
                content=_dict({}),
            )
        ),
        "quantile_forest._quantile_forest_fast.QuantileForest",
    ),
    Case(
        "object-vectorize",
        "ObjectNode",
        lambda m: _craft(
            _calls(
                _node(
                    "ObjectNode",
                    "numpy",
                    "vectorize",
                    content=_dict(
                        {
                            "pyfunc": _runstring_partial(),
                            "excluded": _node("SetNode", "builtins", "set", content=[]),
                            "signature": _json(None),
                            "otypes": _json(None),
                            "cache": _json(False),
                            "_ufunc": _json(None),
                        }
                    ),
                ),
                _write(m),
            )
        ),
        "numpy.vectorize",
        live=True,
    ),
    Case(
        "object-popen",
        "ObjectNode",
        lambda m: _craft(
            _node("ObjectNode", "subprocess", "Popen", content=_dict({"args": _json("id")}))
        ),
        "subprocess.Popen",
    ),
    Case(
        "method-runcode",
        "MethodNode",
        lambda m: _craft(
            _calls(
                _node(
                    "MethodNode",
                    "code",
                    "InteractiveInterpreter",
                    content={
                        "func": "runcode",
                        "obj": _node(
                            "ObjectNode",
                            "code",
                            "InteractiveInterpreter",
                            content=_dict({"locals": _dict({})}),
                        ),
                    },
                ),
                _write(m),
            )
        ),
        "code.InteractiveInterpreter.runcode",
        live=True,
    ),
    Case(
        "operator-methodcaller",
        "OperatorFuncNode",
        lambda m: _craft(
            _node(
                "OperatorFuncNode",
                "operator",
                "methodcaller",
                attrs=_tuple([_json("system"), _json(f"touch '{m}'")]),
            )
        ),
        "operator.methodcaller",
    ),
    Case(
        "operator-attrgetter",
        "OperatorFuncNode",
        lambda m: _craft(
            _node(
                "OperatorFuncNode", "operator", "attrgetter", attrs=_tuple([_json("__globals__")])
            )
        ),
        "operator.attrgetter",
    ),
    Case(
        "ndarray-class",
        "NdArrayNode",
        lambda m: _craft(
            _node("NdArrayNode", "subprocess", "call", type="numpy", file="evil.npy"),
            members=_member("evil.npy", _npy(np.array(["touch", str(m)]))),
        ),
        "subprocess.call",
        live=True,
    ),
    Case(
        "ndarray-object-items",
        "NdArrayNode",
        lambda m: _craft(
            _node(
                "NdArrayNode",
                "numpy",
                "ndarray",
                type="json",
                content=[_runstring_call(_write(m))],
                shape=_tuple([_json(1)]),
            )
        ),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "masked-array",
        "MaskedArrayNode",
        lambda m: _craft(
            _node(
                "MaskedArrayNode",
                "numpy.ma",
                "MaskedArray",
                content={"data": _runstring_call(_write(m)), "mask": _json(False)},
            )
        ),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "random-state",
        "RandomStateNode",
        lambda m: _craft(
            _node(
                "RandomStateNode",
                "numpy.random.mtrand",
                "RandomState",
                content=_runstring_call(_write(m)),
            )
        ),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "random-state-class",
        "RandomStateNode",
        lambda m: _craft(_node("RandomStateNode", *RUNSTRING, content=_dict({}))),
        "numpy.testing._private.utils.runstring",
    ),
    Case(
        "random-generator",
        "RandomGeneratorNode",
        lambda m: _craft(
            _node(
                "RandomGeneratorNode",
                "numpy.random._generator",
                "Generator",
                content={
                    "bit_generator": _dict({"bit_generator": _json("seed")}),
                    "seed_seq": _dict({}),
                },
            )
        ),
        "numpy.random.seed",
    ),
    Case(
        "dtype",
        "DTypeNode",
        lambda m: _craft(
            _node(
                "DTypeNode",
                "numpy",
                "dtype",
                content=_node(
                    "NdArrayNode",
                    "numpy",
                    "ndarray",
                    type="json",
                    content=[_runstring_call(_write(m))],
                    shape=_tuple([_json(1)]),
                ),
            )
        ),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "sparse-matrix",
        "SparseMatrixNode",
        lambda m: _craft(
            _node("SparseMatrixNode", "os", "system", type="scipy", file="evil.npz"),
            members=_member("evil.npz", _npz()),
        ),
        "os.system",
    ),
    Case(
        "dict-class",
        "DictNode",
        lambda m: _craft(_node("DictNode", *RUNSTRING, content={}, key_types=_list([]))),
        "numpy.testing._private.utils.runstring",
    ),
    Case(
        "defaultdict-factory",
        "DefaultDictNode",
        lambda m: _craft(
            _node(
                "DefaultDictNode",
                "collections",
                "defaultdict",
                content={
                    "main": _dict({}),
                    "default_factory": _partial(_function("builtins", "exec"), [_json(_write(m))]),
                },
            )
        ),
        "builtins.exec",
    ),
    Case(
        "list-subprocess",
        "ListNode",
        lambda m: _craft(_list([_json("touch"), _json(str(m))], "subprocess", "call")),
        "subprocess.call",
        live=True,
    ),
    Case(
        "set-class",
        "SetNode",
        lambda m: _craft(_node("SetNode", "os", "system", content=[])),
        "os.system",
    ),
    Case(
        "set-items",
        "SetNode",
        lambda m: _craft(_node("SetNode", "builtins", "set", content=[_runstring_call(_write(m))])),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "tuple-class",
        "TupleNode",
        lambda m: _craft(_node("TupleNode", "os", "system", content=[])),
        "os.system",
    ),
    Case(
        "tuple-items",
        "TupleNode",
        lambda m: _craft(_tuple([_runstring_call(_write(m))])),
        "numpy.testing._private.utils.runstring",
        live=True,
    ),
    Case(
        "slice",
        "SliceNode",
        lambda m: _craft(
            _node("SliceNode", "builtins", "eval", content={"start": 0, "stop": 1, "step": None})
        ),
        "builtins.eval",
    ),
    Case(
        "bytes",
        "BytesNode",
        lambda m: _craft(
            _node("BytesNode", "os", "system", file="evil.bin"), members=_member("evil.bin", b"x")
        ),
        "os.system",
    ),
    Case(
        "bytearray",
        "BytearrayNode",
        lambda m: _craft(
            _node("BytearrayNode", "builtins", "exec", file="evil.bin"),
            members=_member("evil.bin", b"x"),
        ),
        "builtins.exec",
    ),
    Case(
        "json",
        "JsonNode",
        lambda m: _craft(_node("JsonNode", "builtins", "eval", content='"x"', is_json=True)),
        "builtins.eval",
    ),
    Case(
        "cached",
        "CachedNode",
        # refers to an object loaded earlier in the file (the estimator's "penalty")
        lambda m: _craft(
            _node(
                "CachedNode",
                "builtins",
                "eval",
                __id__=_base()[0]["content"]["content"]["penalty"]["__id__"],
            )
        ),
        "builtins.eval",
    ),
    Case(
        "unknown-loader",
        "(unknown)",
        lambda m: _craft(_node("EvalNode", "builtins", "eval", content=_write(m))),
        "'EvalNode'",
    ),
]


def _ids(case: Case) -> str:
    return case.id


def _record(store: ArtifactStore, data: bytes) -> ModelFile:
    """The file stored, with a record listing what it needs: an attacker writes both."""
    import skops.io as sio

    try:
        claimed = tuple(sio.get_untrusted_types(data=data))
    except Exception:  # noqa: BLE001 - skops cannot even read some of them
        claimed = ()
    artifact = store.put_bytes(data)
    cls = "sklearn.linear_model._logistic.LogisticRegression"
    return ModelFile("skops", artifact.digest, artifact.size, claimed, cls)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_crafted_file_is_refused_by_load_model(
    case: Case, store: ArtifactStore, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    file = _record(store, case.build(marker))
    with pytest.raises(UnsafeModelFile) as err:
        load_model(store, file, what=WHAT, allow_pickle=False)
    assert not marker.exists()
    assert WHAT in str(err.value)
    assert case.refused in str(err.value)
    # naming the bad type in model.trusted_types stops nothing else: the rest is still checked
    with pytest.raises(UnsafeModelFile):
        load_model(store, file, what=WHAT, allow_pickle=False, trusted_extra=["numpy.ndarray"])
    assert not marker.exists()


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_crafted_file_is_refused_by_the_step_output_loader(
    case: Case, store: ArtifactStore, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    file = _record(store, case.build(marker))
    descriptor = file.to_dict()  # what pipeline/outputs.py stores for a skops output
    with pytest.raises(UnsafeModelFile) as err:
        load_output(descriptor, store)
    assert not marker.exists()
    assert case.refused in str(err.value)


def test_every_loader_node_type_of_skops_has_a_case() -> None:
    import skops.io  # noqa: F401 - registers every node type
    from skops.io._audit import NODE_TYPE_MAPPING

    loaders = {loader for loader, _ in NODE_TYPE_MAPPING}
    loaders.discard("_DictWithDeprecatedKeysNode")  # only registered with scikit-learn < 1.2
    assert loaders <= {case.node for case in CASES}


@pytest.mark.parametrize("case", [c for c in CASES if c.live], ids=_ids)
def test_live_payloads_do_run_when_skops_trusts_their_names(case: Case, tmp_path: Path) -> None:
    # The refusals above matter: told to trust what these files name (as the old prefix check
    # did for numpy.testing... with the record's list), skops runs them while loading.
    import skops.io as sio

    from conveyor.store.trusted import names_in_file

    marker = tmp_path / "pwned"
    data = case.build(marker)
    try:
        sio.loads(data, trusted=sorted(names_in_file(data, what="a crafted file")))
    except Exception:  # noqa: BLE001, S110 - most fail after the payload ran
        pass
    assert marker.exists()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.node not in {"CachedNode", "(unknown)"}], ids=_ids
)
def test_the_walk_sees_every_name_skops_audits(case: Case, tmp_path: Path) -> None:
    import skops.io as sio

    from conveyor.store.trusted import names_in_file

    data = case.build(tmp_path / "pwned")
    try:
        audited = set(sio.get_untrusted_types(data=data))
    except Exception:  # noqa: BLE001 - skops refuses a few while reading them
        pytest.skip("skops cannot read this file at all (quantile-forest is not installed)")
    assert audited <= names_in_file(data, what="a crafted file")


def test_files_that_are_not_skops_are_refused(store: ArtifactStore) -> None:
    not_zip = _record(store, b"not a zip file")
    with pytest.raises(UnsafeModelFile, match=r"cannot be checked as a skops file"):
        load_model(store, not_zip, what=WHAT, allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", "[1, 2]")
    with pytest.raises(UnsafeModelFile, match=r"schema\.json is not an object"):
        load_model(store, _record(store, out.getvalue()), what=WHAT, allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(UnsafeModelFile, match=r"RecursionError"):
        load_model(store, _record(store, out.getvalue()), what=WHAT, allow_pickle=False)


# -- ordinary estimators still save and load -------------------------------------------------


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    n = 120
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, n),
            "age": rng.integers(18, 80, n).astype(float),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )
    return frame, ((frame["income"] > 50) ^ (frame["region"] == "east")).to_numpy().astype(int)


def _models() -> list[tuple[str, Any, bool]]:
    """(name, estimator, takes the frame with the categorical column)."""
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["income", "age"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ]
    )
    return [
        ("logistic", LogisticRegression(), False),
        ("forest", RandomForestClassifier(n_estimators=5, random_state=0), False),
        ("gbm", GradientBoostingClassifier(n_estimators=5, random_state=0), False),
        ("hgb", HistGradientBoostingClassifier(max_iter=5), False),
        ("pipeline", Pipeline([("prep", prep), ("clf", LogisticRegression())]), True),
        ("ridge", Ridge(), False),
        ("kmeans", KMeans(n_clusters=3, n_init=2, random_state=0), False),
    ]


@pytest.mark.parametrize("name", [name for name, _, _ in _models()])
def test_ordinary_estimators_save_and_load(name: str, store: ArtifactStore) -> None:
    model, categorical = next((m, c) for n, m, c in _models() if n == name)
    frame, y = _frame()
    X = frame if categorical else frame[["income", "age"]].to_numpy()
    model.fit(X, y)
    file = save_model(model, store)
    loaded = load_model(store, file, what=WHAT, allow_pickle=False)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    outputs, _ = store_return("train", model, store)
    again = load_output(outputs["return"], store)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


# -- model.trusted_types: exact names only ---------------------------------------------------


class Doubler(BaseEstimator, TransformerMixin):
    """A user's own transformer: loads only once its exact name is trusted."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2


DOUBLER = f"{Doubler.__module__}.{Doubler.__qualname__}"


def test_a_module_prefix_no_longer_trusts_what_is_under_it(store: ArtifactStore) -> None:
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = (X[:, 0] > 20).astype(int)
    model = Pipeline([("double", Doubler()), ("clf", LogisticRegression())]).fit(X, y)
    module = Doubler.__module__  # "tests.registry.test_model_file_safety"
    prefix = rf"'{DOUBLER}' \('{module}' in model\.trusted_types trusts only that exact name"
    with pytest.raises(UnsafeModelFile, match=prefix):
        save_model(model, store, trusted_extra=[module])
    file = save_model(model, store, trusted_extra=[DOUBLER])
    with pytest.raises(UnsafeModelFile, match=prefix):
        load_model(store, file, what=WHAT, allow_pickle=False, trusted_extra=[module])
    with pytest.raises(UnsafeModelFile, match=r"lists 'tests', which is not a full name"):
        load_model(store, file, what=WHAT, allow_pickle=False, trusted_extra=["tests"])
    with pytest.raises(UnsafeModelFile, match=rf"{WHAT} needs types .*'{DOUBLER}'"):
        load_model(store, file, what=WHAT, allow_pickle=False)
    loaded = load_model(store, file, what=WHAT, allow_pickle=False, trusted_extra=[DOUBLER])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    outputs, _ = store_return("train", model, store)
    with pytest.raises(UnsafeModelFile, match=rf"'{DOUBLER}'.*model\.trusted_types"):
        load_output(outputs["return"], store)
    again = load_output(outputs["return"], store, trusted_extra=[DOUBLER])
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_check_trusted_matches_exact_names_only() -> None:
    check_trusted(["sklearn.tree._tree.Tree", "functools.partial", "numpy.ndarray"], [], what=WHAT)
    check_trusted(["mypkg.sub.Thing"], ["mypkg.sub.Thing"], what=WHAT)
    runstring = "numpy.testing._private.utils.runstring"
    for prefix in ("numpy.testing", "numpy.testing._private.utils"):
        with pytest.raises(UnsafeModelFile, match=rf"'{prefix}' in model\.trusted_types trusts"):
            check_trusted([runstring], [prefix], what=WHAT)
    for module in ("numpy", "xgboost", "mypkg.", "mypkg.*"):
        with pytest.raises(UnsafeModelFile, match=r"which is not a full name.*exact"):
            check_trusted(["sklearn.tree._tree.Tree"], [module], what=WHAT)
    with pytest.raises(UnsafeModelFile, match=r"'builtins\.eval', 'sklearnx\.Evil'"):
        check_trusted(["sklearnx.Evil", "builtins.eval", "numpy.ndarray"], [], what=WHAT)


# -- the shipped allow-list ------------------------------------------------------------------


def test_the_allow_list_is_a_literal_of_exact_names() -> None:
    from sklearn.utils import all_estimators
    from skops.io._utils import get_type_name

    from conveyor.store import trusted

    source = Path(trusted.__file__).read_text()
    tree = ast.parse(source)
    (assign,) = [
        node
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "SKLEARN_TYPES"
    ]
    literal = assign.value.args[0]
    assert isinstance(literal, ast.Set)
    assert all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in literal.elts)
    names = trusted.SKLEARN_TYPES
    assert names == frozenset(e.value for e in literal.elts)
    assert all(trusted._FULL_NAME.fullmatch(n) and not trusted._NEVER.match(n) for n in names)
    for bad in (
        "numpy.testing._private.utils.runstring",
        "builtins.eval",
        "builtins.exec",
        "builtins.map",
        "os.system",
        "operator.methodcaller",
        "subprocess.call",
        "numpy.vectorize",
        "numpy",
        "sklearn",
    ):
        assert bad not in names
    needed = {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn.utils._bunch.Bunch",
        "scipy.sparse._csr.csr_matrix",
        "numpy.ndarray",
        "numpy.float64",
        "builtins.slice",
        "functools.partial",
    }
    assert needed <= names
    assert {get_type_name(cls) for _, cls in all_estimators()} <= names


@pytest.mark.slow
def test_the_allow_list_matches_a_fresh_generation() -> None:
    from conveyor.store import trusted

    generated = trusted.generate()
    assert not generated - trusted.SKLEARN_TYPES, "run python -m conveyor.store.trusted --write"
    assert not trusted.SKLEARN_TYPES - generated, "run python -m conveyor.store.trusted --write"
    flavours = trusted.generate_flavours()
    for name, shipped in (("xgboost", trusted.XGBOOST_TYPES), ("lightgbm", trusted.LIGHTGBM_TYPES)):
        if name in flavours:
            assert flavours[name] == shipped, "run python -m conveyor.store.trusted --write"
