from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from conveyor.exceptions import ModelTampered, RegistryError, UnsafeModelFile
from conveyor.pipeline.outputs import store_return
from conveyor.registry.modelfile import (
    DEFAULT_TRUSTED_MODULES,
    ModelFile,
    check_trusted,
    from_step_output,
    load_model,
    save_model,
)
from conveyor.store.artifacts import ArtifactStore

WHAT = "model 'loans' version 3"


class Doubler(BaseEstimator, TransformerMixin):
    """A user-defined transformer: a type that skops must not load unless someone trusts it."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2


DOUBLER = f"{Doubler.__module__}.{Doubler.__qualname__}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore(str(tmp_path / "artifacts")) as opened:
        yield opened


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _fitted(data: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    return LogisticRegression().fit(*data)


def _tamper(store: ArtifactStore, digest: str) -> None:
    path = store.path(digest, verify=False)
    os.chmod(path, 0o644)  # objects are read-only; an attacker with write access does this
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_skops_round_trip(store: ArtifactStore, data) -> None:
    model = _fitted(data)
    file = save_model(model, store)
    assert file.format == "skops"
    assert file.cls == "sklearn.linear_model._logistic.LogisticRegression"
    assert file.size == len(store.read_bytes(file.digest))
    again = ModelFile.from_dict(json.loads(json.dumps(file.to_dict())))
    assert again == file
    loaded = load_model(store, again, what=WHAT, allow_pickle=False)
    np.testing.assert_array_equal(loaded.predict_proba(data[0]), model.predict_proba(data[0]))


def test_pickle_round_trip_when_allowed(store: ArtifactStore, data) -> None:
    model = _fitted(data)
    file = save_model(model, store, format="pickle", allow_pickle=True)
    assert (file.format, file.trusted) == ("pickle", ())
    loaded = load_model(store, file, what=WHAT, allow_pickle=True)
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))


def test_pickle_forbidden_by_policy(store: ArtifactStore, data) -> None:
    with pytest.raises(UnsafeModelFile, match=r"registry\.allow_pickle"):
        save_model(_fitted(data), store, format="pickle")
    file = save_model(_fitted(data), store, format="pickle", allow_pickle=True)
    with pytest.raises(UnsafeModelFile, match=rf"pickle for {WHAT}.*registry\.allow_pickle"):
        load_model(store, file, what=WHAT, allow_pickle=False)


@pytest.mark.parametrize("fmt", ["skops", "pickle"])
def test_tampered_file_is_never_loaded(store: ArtifactStore, data, fmt: str) -> None:
    file = save_model(_fitted(data), store, format=fmt, allow_pickle=True)
    _tamper(store, file.digest)
    with pytest.raises(ModelTampered) as err:
        load_model(store, file, what=WHAT, allow_pickle=True)
    message = str(err.value)
    assert WHAT in message
    assert file.digest in message
    assert "register a new version" in message


def test_missing_file_names_the_version(store: ArtifactStore) -> None:
    file = ModelFile("skops", "ab" * 32, 10, (), "sklearn.linear_model.LogisticRegression")
    with pytest.raises(RegistryError, match=rf"{WHAT} \(artifact {'ab' * 32}\) is missing") as err:
        load_model(store, file, what=WHAT, allow_pickle=False)
    assert not isinstance(err.value, ModelTampered)


def test_untrusted_custom_type_is_refused_until_trusted(store: ArtifactStore, data) -> None:
    model = Pipeline([("double", Doubler()), ("clf", LogisticRegression())]).fit(*data)
    with pytest.raises(UnsafeModelFile, match=rf"'{DOUBLER}'.*model\.trusted_types"):
        save_model(model, store)

    file = save_model(model, store, trusted_extra=[DOUBLER])
    assert DOUBLER in file.trusted
    with pytest.raises(UnsafeModelFile, match=rf"{WHAT} needs types .*'{DOUBLER}'"):
        load_model(store, file, what=WHAT, allow_pickle=False)
    loaded = load_model(store, file, what=WHAT, allow_pickle=False, trusted_extra=[DOUBLER])
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))


def test_trusted_entries_match_exact_names_only() -> None:
    check_trusted(["sklearn.tree._tree.Tree", "functools.partial"], [], what=WHAT)
    check_trusted(["mypkg.sub.Thing"], ["mypkg.sub.Thing"], what=WHAT)
    assert "builtins" not in DEFAULT_TRUSTED_MODULES
    # a module prefix trusts nothing under it: "numpy" would admit an exec in numpy.testing
    with pytest.raises(UnsafeModelFile, match=r"mypkg"):
        check_trusted(["mypkg.sub.Thing"], ["mypkg"], what=WHAT)
    with pytest.raises(UnsafeModelFile, match=r"'builtins\.eval', 'sklearnx\.Evil'"):
        check_trusted(["sklearnx.Evil", "builtins.eval", "numpy.ndarray"], [], what=WHAT)


def test_a_record_listing_fewer_types_than_the_file_needs_still_loads_from_the_file(
    store: ArtifactStore, data
) -> None:
    # the record's list is never believed: the file's own node tree is checked against the
    # allow-list, so a stripped record neither widens nor narrows what is trusted
    model = HistGradientBoostingClassifier(max_iter=3).fit(*data)
    file = save_model(model, store)
    assert file.trusted
    stripped = ModelFile(file.format, file.digest, file.size, (), file.cls)
    loaded = load_model(store, stripped, what=WHAT, allow_pickle=False)
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))


def test_from_step_output_wraps_the_same_object(store: ArtifactStore, data) -> None:
    model = _fitted(data)
    outputs, _ = store_return("train", model, store)
    file = from_step_output(outputs["return"])
    assert file.digest == outputs["return"]["digest"]
    assert file.cls.endswith("LogisticRegression")
    loaded = load_model(store, file, what=WHAT, allow_pickle=False)
    np.testing.assert_array_equal(loaded.predict(data[0]), model.predict(data[0]))


def test_from_step_output_refuses_other_formats(store: ArtifactStore) -> None:
    outputs, _ = store_return("prepare", pd.DataFrame({"a": [1, 2]}), store)
    with pytest.raises(RegistryError, match=r"stored as 'parquet'.*Return the fitted"):
        from_step_output(outputs["return"])


def test_from_dict_rejects_unknown_format() -> None:
    with pytest.raises(RegistryError, match="'joblib'"):
        ModelFile.from_dict({"format": "joblib", "digest": "ab" * 32, "size": 1})
    with pytest.raises(RegistryError, match="'size'"):
        ModelFile.from_dict({"format": "skops", "digest": "ab" * 32})
