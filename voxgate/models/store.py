"""The model store: prepares catalogue models into the cache once, then hands engines their paths.

Preparing copies (or concatenates) the files out of the installed data packages, hashing while
writing, and stamps each file's sha256, size and mtime. At start-up only size and mtime are checked
against the stamp (a few ``stat`` calls, no rehash); :meth:`ModelStore.verify` does the full check.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from voxgate.core.errors import ConfigError, ModelError
from voxgate.models.catalog import CATALOG, ModelFile, ModelSpec, SourceFile

if sys.platform != "win32":
    import fcntl

STAMP_NAME = ".voxgate-prepared.json"
_CHUNK_BYTES = 4 << 20
_PROGRESS_MIN_BYTES = 16 << 20  # below this a copy takes a blink; a bar would only flicker

Stamp = dict[str, dict[str, Any]]
Advance = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ModelStatus:
    spec: ModelSpec
    prepared: bool
    path: Path
    """What :meth:`ModelStore.resolve` returns for this model (it may not exist yet)."""
    size_bytes: int
    packages_missing: tuple[str, ...]
    problem: str | None
    """Why the model cannot be used or prepared as it stands; None when it can."""


class ModelStore:
    """Resolves model names to prepared files under ``cache_dir`` (``Settings.models_dir``)."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        show_progress: bool = True,
        catalog: Mapping[str, ModelSpec] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.catalog: Mapping[str, ModelSpec] = CATALOG if catalog is None else catalog

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.catalog[name]
        except KeyError:
            known = ", ".join(self.catalog) or "none"
            msg = f"unknown model {name!r}: no such file or directory, nor a catalogue name"
            raise ConfigError(f"{msg} (known: {known})") from None

    def model_dir(self, name: str) -> Path:
        return self.cache_dir / name

    def resolve(self, name_or_path: str) -> Path:
        """The path to hand the engine: a user's own file as is, or a prepared catalogue model."""
        if not name_or_path.strip():
            raise ConfigError("empty model name")
        path = Path(name_or_path).expanduser()
        if path.exists():
            return path
        spec = self.spec(name_or_path)
        if self._is_prepared(spec):
            return self.model_dir(spec.name) / spec.entry
        return self.prepare(spec.name)

    def prepare(self, name: str, force: bool = False) -> Path:
        """Copy the model out of its packages (only the files not already prepared, unless
        ``force``) and return the path :meth:`resolve` gives."""
        spec = self.spec(name)
        model_dir = self.model_dir(name)
        with self._lock(name) as exclusive:
            model_dir.mkdir(parents=True, exist_ok=True)
            if exclusive:  # nobody else writes while we hold it: temp files are a killed run's
                for leftover in model_dir.glob(".*.part"):
                    leftover.unlink(missing_ok=True)
            # Read under the lock: another process may have finished while we waited.
            old = {} if force else _read_stamp(model_dir)
            stamp = {f.name: old[f.name] for f in spec.files if _is_fresh(model_dir, f, old)}
            todo = [f for f in spec.files if f.name not in stamp]
            total = sum(f.size_bytes for f in todo)
            try:
                sources = _find_sources(spec, todo) if todo else {}
                with self._progress(f"preparing {name}", total) as advance:
                    for file in todo:
                        paths = [sources[source] for source in file.sources]
                        stamp |= _build(spec, file, paths, model_dir / file.name, advance)
                        # Per file, so a later failure does not disown the finished copies.
                        _write_stamp(model_dir, spec.name, stamp)
            finally:
                if not any(model_dir.iterdir()):
                    model_dir.rmdir()
        return model_dir / spec.entry

    def prepare_defaults(self) -> list[Path]:
        return [self.prepare(spec.name) for spec in self.catalog.values() if spec.default]

    def verify(self, name: str) -> None:
        """Rehash every prepared file. A corrupt file loses its stamp entry, so the next
        :meth:`resolve` prepares it again."""
        spec = self.spec(name)
        model_dir = self.model_dir(name)
        missing = [f.name for f in spec.files if not (model_dir / f.name).is_file()]
        if missing:
            raise ModelError(f"model {name!r} is not prepared (missing: {', '.join(missing)})")
        total = sum(f.size_bytes for f in spec.files)
        with self._progress(f"verifying {name}", total) as advance:
            bad = [f.name for f in spec.files if _sha256(model_dir / f.name, advance) != f.sha256]
        if bad:
            with self._lock(name):
                stamp = _read_stamp(model_dir)
                _write_stamp(model_dir, name, {k: v for k, v in stamp.items() if k not in bad})
            raise ModelError(
                f"model {name!r} in {model_dir} is corrupt ({', '.join(bad)}: wrong sha256); "
                "it will be prepared again on next use"
            )

    def status(self, name: str) -> ModelStatus:
        spec = self.spec(name)
        prepared = self._is_prepared(spec)
        missing = _missing_packages(spec)
        problem = None  # once prepared, the packages are only needed to prepare it again
        if not prepared:
            try:
                _find_sources(spec, spec.files)
            except ModelError as exc:
                problem = str(exc)
        path = self.model_dir(name) / spec.entry
        return ModelStatus(spec, prepared, path, spec.size_bytes, missing, problem)

    def statuses(self) -> list[ModelStatus]:
        return [self.status(name) for name in self.catalog]

    def _is_prepared(self, spec: ModelSpec) -> bool:
        model_dir = self.model_dir(spec.name)
        stamp = _read_stamp(model_dir)
        return all(_is_fresh(model_dir, f, stamp) for f in spec.files)

    @contextmanager
    def _lock(self, name: str) -> Iterator[bool]:
        """Serialises preparing a model across processes. Without flock (Windows), unique temp
        files and atomic renames still keep the result whole; work may just be done twice."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if sys.platform == "win32":
            yield False
            return
        # Beside the model directory, not in it, so a failed first prepare leaves nothing behind.
        with (self.cache_dir / f".{name}.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield True

    @contextmanager
    def _progress(self, label: str, total: int) -> Iterator[Advance]:
        if not self.show_progress or total < _PROGRESS_MIN_BYTES:
            yield lambda _: None
            return
        import rich.progress as rp
        from rich.console import Console

        columns = (rp.BarColumn(), rp.DownloadColumn(), rp.TransferSpeedColumn())
        # stderr: stdout may carry a CLI command's actual output.
        console = Console(stderr=True)
        with rp.Progress(rp.TextColumn("{task.description}"), *columns, console=console) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)


def _missing_packages(spec: ModelSpec) -> tuple[str, ...]:
    missing = []
    for package in spec.packages:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return tuple(missing)


def _find_sources(spec: ModelSpec, files: Sequence[ModelFile]) -> dict[SourceFile, Path]:
    """Where the installed packages keep ``files``' sources; ModelError naming the fix if not."""
    missing = _missing_packages(spec)
    if missing:
        # A model of an optional group names the group: one short command, not 22 packages.
        command = (
            f"pip install 'voxgate[{spec.extra}]'" if spec.extra else spec.pip_command(missing)
        )
        raise ModelError(
            f"model {spec.name!r} needs {', '.join(missing)}, not installed; "
            f"install with: {command}"
        )
    found: dict[SourceFile, Path] = {}
    for file in files:
        paths = [_locate(source) for source in file.sources]
        located = [path for path in paths if path is not None]
        if len(located) < len(paths) or sum(p.stat().st_size for p in located) != file.size_bytes:
            versions = ", ".join(f"{p} {metadata.version(p)}" for p in file.packages)
            raise ModelError(
                f"model {spec.name!r}: {file.name} is missing or has the wrong size in {versions} "
                "(damaged, or not the expected version); reinstall with: "
                f"{spec.pip_command(file.packages, reinstall=True)}"
            )
        found.update(zip(file.sources, located, strict=True))
    return found


def _locate(source: SourceFile) -> Path | None:
    for entry in metadata.distribution(source.package).files or ():
        if entry.as_posix() == source.path:
            path = Path(str(entry.locate()))
            return path if path.is_file() else None
    return None


def _build(
    spec: ModelSpec, file: ModelFile, sources: list[Path], target: Path, advance: Advance
) -> Stamp:
    """Write ``file`` from its sources, hashing on the way, and return its stamp entry."""
    digest = hashlib.sha256()
    with _atomic_write(target) as out:
        for chunk in _chunks(sources, advance):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != file.sha256:
            raise ModelError(
                f"model {spec.name!r}: {file.name} built from {', '.join(file.packages)} does not "
                f"match its pinned sha256 (got {digest.hexdigest()}, expected {file.sha256}); "
                f"reinstall with: {spec.pip_command(file.packages, reinstall=True)}"
            )
    stat = target.stat()
    return {file.name: {"sha256": file.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}}


@contextmanager
def _atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A unique temp file beside ``target``, renamed over it only if the block succeeds, so readers
    and concurrent writers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a service user may need to read the cache
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _chunks(paths: list[Path], advance: Advance) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as src:
            while chunk := src.read(_CHUNK_BYTES):
                advance(len(chunk))
                yield chunk


def _is_fresh(model_dir: Path, file: ModelFile, stamp: Stamp) -> bool:
    entry = stamp.get(file.name)
    try:
        stat = (model_dir / file.name).stat()
    except OSError:
        return False
    if not isinstance(entry, dict) or stat.st_size != file.size_bytes:
        return False
    recorded = (entry.get("sha256"), entry.get("size"), entry.get("mtime_ns"))
    return recorded == (file.sha256, file.size_bytes, stat.st_mtime_ns)


def _read_stamp(model_dir: Path) -> Stamp:
    try:
        data = json.loads((model_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write_stamp(model_dir: Path, name: str, stamp: Stamp) -> None:
    with _atomic_write(model_dir / STAMP_NAME) as out:
        out.write(json.dumps({"model": name, "files": stamp}, indent=2, sort_keys=True).encode())


def _sha256(path: Path, advance: Advance) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks([path], advance):
        digest.update(chunk)
    return digest.hexdigest()
