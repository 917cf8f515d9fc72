"""Credentials in a store URL never reach a message: neither the userinfo password nor a
password passed as a query parameter (``?password=``, ``&sslpassword=``, ``?token=``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.exceptions import StoreError, safe_url
from conveyor.store.artifacts import ArtifactStore
from conveyor.store.metadata import Store


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://bob:hunter2@db:5432/ml?sslmode=require&password=hunter3",
            "postgresql://bob:***@db:5432/ml?sslmode=require&password=***",
        ),
        (
            "postgresql://db/ml?user=bob&password=hunter2",
            "postgresql://db/ml?user=bob&password=***",
        ),
        ("postgresql://bob:p/ss@w@rd@db/ml", "postgresql://bob:***@db/ml"),
        (
            "mysql://u:p@h/db?ssl_key=k.pem&sslpassword=s3&PWD=x#frag",
            "mysql://u:***@h/db?ssl_key=***&sslpassword=***&PWD=***#frag",
        ),
        (
            "s3://bucket/models?aws_secret_access_key=AbC&region=eu&X-Amz-Signature=f00",
            "s3://bucket/models?aws_secret_access_key=***&region=eu&X-Amz-Signature=***",
        ),
        ("postgresql://bob@db/ml?sslmode=require", "postgresql://bob@db/ml?sslmode=require"),
        ("sqlite:////srv/ml/conveyor.db", "sqlite:////srv/ml/conveyor.db"),
        ("s3://bucket/run@2/x", "s3://bucket/run@2/x"),
    ],
)
def test_safe_url_hides_every_credential(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_a_store_that_cannot_be_reached_does_not_print_its_password() -> None:
    url = "postgresql://bob@127.0.0.1:9/ml?connect_timeout=2&password=hunter2"

    with pytest.raises(StoreError) as caught:
        Store(url).open()

    assert "hunter2" not in str(caught.value)
    assert "password=***" in str(caught.value)


def test_an_artifact_store_url_with_credentials_is_shown_without_them(tmp_path: Path) -> None:
    store = ArtifactStore("s3://AKIAX:wJalrXUt@bucket/p?token=abc", cache_dir=tmp_path)

    assert repr(store) == "ArtifactStore('s3://AKIAX:***@bucket/p?token=***')"
    assert store.location == "s3://AKIAX:***@bucket/p?token=***"
