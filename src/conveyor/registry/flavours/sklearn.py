"""scikit-learn models (and anything skops saves), as skops files checked against the allow-list
of exact names before they are loaded."""

from __future__ import annotations

from typing import Any

from conveyor.exceptions import RegistryError
from conveyor.registry.flavours.base import class_name, infer
from conveyor.store.trusted import SKLEARN_TYPES, check_names, load_skops, names_in_file


class ScikitLearn:
    """The default flavour: every model no other flavour claims."""

    name = "sklearn"
    formats: tuple[str, ...] = ("skops",)
    extra: str | None = None
    trusted_types = SKLEARN_TYPES

    def owns(self, cls: str) -> bool:
        return True

    def claims(self, model: Any) -> bool:
        return True

    def save(self, model: Any, *, trusted_extra: tuple[str, ...] = ()) -> tuple[str, bytes]:
        """The skops bytes, refused now (naming the type) if they need an untrusted name.

        Raises:
            RegistryError: skops cannot save the model.
            UnsafeModelFile: the file names a type nobody trusted.
        """
        from conveyor.store.trusted import skops_io

        sio = skops_io()

        cls = class_name(model)
        try:
            data = sio.dumps(model)
        except Exception as exc:
            raise RegistryError(
                f"skops cannot save the {cls}: {exc}. Use scikit-learn compatible types, or "
                "set registry.allow_pickle and save it as a pickle."
            ) from exc
        what = f"the {cls}"
        check_names(names_in_file(data, what=what), trusted_extra, what=what, allowed=SKLEARN_TYPES)
        return "skops", data

    def load(self, fmt: str, data: bytes, *, what: str, trusted_extra: tuple[str, ...] = ()) -> Any:
        return load_skops(data, trusted_extra, what=what)

    def signature(self, model: Any, features: Any, task: str) -> dict[str, Any]:
        return infer(model, features, task)

    def export_onnx(
        self, model: Any, sample: Any, task: str
    ) -> tuple[bytes | None, dict[str, Any]]:
        from conveyor.registry.onnx import export_onnx

        return export_onnx(model, sample, task=task)
