"""Settings per engine: each section is its provider's own settings class, with its own defaults;
old config files and environment variables still load, and a key the chosen engine does not have
is an error that says what to change."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from voxgate.core import registry
from voxgate.core.config import Settings, load_settings
from voxgate.core.engine_settings import (
    EngineSettings,
    HttpApiSettings,
    LLMSettings,
    RealtimeSettings,
    STTSettings,
    TTSSettings,
    VADSettings,
    engine_settings,
)
from voxgate.core.errors import ConfigError
from voxgate.models.catalog import CATALOG
from voxgate.providers.deepgram_stt import DeepgramSTTSettings
from voxgate.providers.faster_whisper_stt import FasterWhisperSettings
from voxgate.providers.llamacpp_llm import LlamaCppSettings
from voxgate.providers.openai_llm import OpenAILLMSettings
from voxgate.providers.piper_tts import PiperSettings

ROOT = Path(__file__).resolve().parents[2]
BASES = {
    "vad": VADSettings,
    "stt": STTSettings,
    "llm": LLMSettings,
    "tts": TTSSettings,
    "s2s": RealtimeSettings,
}
ENGINES = [(cap, name) for cap in BASES for name in registry.provider_names(cap)]
# What a cloud engine cannot do without (it has no default for them).
REQUIRED = {"model": "some-model"}


@pytest.fixture(autouse=True)
def _no_voxgate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VOXGATE_"):
            monkeypatch.delenv(name)


def _load(tmp_path: Path, toml: str) -> Settings:
    path = tmp_path / "voxgate.toml"
    path.write_text(toml)
    return load_settings(path)


def _problem(tmp_path: Path, toml: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, toml)
    return str(caught.value)


# -- old config files and environment variables ------------------------------------------------


def _toml_examples(path: Path) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", path.read_text(), flags=re.DOTALL)


DOC_EXAMPLES = [
    pytest.param(block, id=f"{doc}#{n}")
    for doc in ("README.md", "docs/providers.md")
    for n, block in enumerate(_toml_examples(ROOT / doc))
]


@pytest.mark.parametrize("block", DOC_EXAMPLES)
def test_every_toml_example_in_the_docs_loads(tmp_path: Path, block: str) -> None:
    settings = _load(tmp_path, block)
    for capability in ("stt", "llm", "tts"):
        section = getattr(settings, capability)
        for engine in (section, *section.fallbacks):
            assert isinstance(engine, registry.settings_model(capability, engine.provider))


def test_a_config_written_for_the_old_settings_bags_still_loads(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        """
[vad]
provider = "silero"
model = "silero-vad"
threshold = 0.6

[stt]
provider = "faster-whisper"
model = "whisper-base"
language = "en"
compute_type = "int8"
beam_size = 2
threads = 3
max_concurrent = 2

[llm]
provider = "llamacpp"
model = "qwen2.5-0.5b-instruct"
context_tokens = 4096
max_tokens = 100
threads = 2

[tts]
provider = "piper"
voice = "en_US-joe-medium"
length_scale = 1.1

[[tts.fallbacks]]
provider = "deepgram"
""",
    )
    assert isinstance(settings.stt, FasterWhisperSettings)
    assert (settings.stt.model, settings.stt.beam_size, settings.stt.threads) == (
        "whisper-base",
        2,
        3,
    )
    assert settings.vad.threshold == 0.6
    assert isinstance(settings.llm, LlamaCppSettings) and settings.llm.context_tokens == 4096
    assert isinstance(settings.tts, PiperSettings) and settings.tts.length_scale == 1.1
    assert [f.priced_model for f in settings.tts.fallbacks] == ["aura-2-thalia-en"]


def test_old_environment_variables_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGATE_STT__MODEL", "whisper-base")
    monkeypatch.setenv("VOXGATE_LLM__PROVIDER", "openai")
    monkeypatch.setenv("VOXGATE_LLM__BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("VOXGATE_LLM__MODEL", "llama3.2")
    monkeypatch.setenv("VOXGATE_LLM__API_KEY", "sk-env")
    monkeypatch.setenv("VOXGATE_TTS__FALLBACKS", '[{"provider": "piper"}]')
    settings = load_settings()
    assert isinstance(settings.stt, FasterWhisperSettings) and settings.stt.model == "whisper-base"
    assert isinstance(settings.llm, OpenAILLMSettings)
    assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == "sk-env"
    assert [f.provider for f in settings.tts.fallbacks] == ["piper"]


def test_the_environment_completes_the_file_section_by_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXGATE_STT__API_KEY", "dg-env")
    settings = _load(tmp_path, '[stt]\nprovider = "deepgram"\nstreaming = true\n')
    assert isinstance(settings.stt, DeepgramSTTSettings) and settings.stt.streaming
    assert settings.stt.api_key is not None and settings.stt.api_key.get_secret_value() == "dg-env"


# -- a key the engine does not have -----------------------------------------------------------


def test_a_key_of_another_engine_names_the_engine_that_has_it(tmp_path: Path) -> None:
    problem = _problem(tmp_path, '[stt]\nprovider = "deepgram"\ncompute_type = "int8"\n')
    assert (
        "stt.compute_type: not a setting of the deepgram STT engine (only of faster-whisper)"
        in (problem)
    )
    assert "remove it, or set provider = 'faster-whisper'" in problem


def test_local_tuning_on_a_cloud_llm_is_refused_not_ignored(tmp_path: Path) -> None:
    problem = _problem(
        tmp_path,
        '[llm]\nprovider = "openai"\nbase_url = "http://h/v1"\nmodel = "m"\nthreads = 4\n',
    )
    assert "llm.threads: not a setting of the openai LLM engine (only of llamacpp)" in problem
    problem = _problem(tmp_path, '[llm]\ntools = ["end_session"]\n')  # llamacpp has no tools
    assert "llm.tools: not a setting of the llamacpp LLM engine (only of openai)" in problem


def test_a_cloud_key_on_a_local_engine_is_refused(tmp_path: Path) -> None:
    problem = _problem(tmp_path, '[tts]\nprovider = "piper"\nbase_url = "https://x"\n')
    assert "tts.base_url: not a setting of the piper TTS engine" in problem


def test_a_typo_lists_the_engines_settings(tmp_path: Path) -> None:
    problem = _problem(tmp_path, '[tts]\nprovider = "piper"\nlenght_scale = 1.2\n')
    assert "tts.lenght_scale: not a setting of the piper TTS engine: remove it" in problem
    assert "length_scale" in problem  # among the settings it does have


def test_a_wrong_key_in_a_fallback_is_located_in_its_fallback(tmp_path: Path) -> None:
    problem = _problem(
        tmp_path,
        '[stt]\nprovider = "deepgram"\n[[stt.fallbacks]]\nprovider = "openai"\n'
        'model = "whisper-1"\nbeam_size = 2\n',
    )
    assert "stt.fallbacks.0.beam_size: not a setting of the openai STT engine" in problem


def test_a_wrong_key_in_the_environment_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGATE_TTS__PROVIDER", "elevenlabs")
    monkeypatch.setenv("VOXGATE_TTS__LENGTH_SCALE", "1.2")
    with pytest.raises(ConfigError, match=r"tts\.length_scale: not a setting of the elevenlabs"):
        load_settings()


def test_a_cloud_engine_without_a_model_says_it_has_no_default(tmp_path: Path) -> None:
    problem = _problem(tmp_path, '[llm]\nprovider = "openai"\nbase_url = "http://h/v1"\n')
    assert "llm.model: the openai LLM engine needs it (it has no default for it)" in problem


def test_an_unknown_provider_names_the_known_ones(tmp_path: Path) -> None:
    problem = _problem(tmp_path, '[tts]\nprovider = "espeak"\n')
    assert "tts.provider: unknown tts provider 'espeak' (known: cloudflare, deepgram," in problem


def test_a_fallback_with_fallbacks_of_its_own_is_refused(tmp_path: Path) -> None:
    problem = _problem(
        tmp_path,
        '[llm]\n[[llm.fallbacks]]\nprovider = "standin"\n'
        '[[llm.fallbacks.fallbacks]]\nprovider = "standin"\n',
    )
    assert "a fallback cannot have fallbacks of its own" in problem


def test_the_command_line_prints_the_message_not_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from voxgate.cli import app

    config = tmp_path / "voxgate.toml"
    config.write_text('[stt]\nprovider = "deepgram"\nbeam_size = 2\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "stt.beam_size: not a setting of the deepgram STT engine" in " ".join(
        result.output.split()
    )


def test_the_realtime_section_is_its_engines_settings_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGATE_REALTIME__API_KEY", "sk-rt")
    settings = load_settings()
    assert isinstance(settings.realtime, registry.settings_model("s2s", "openai-realtime"))
    assert settings.realtime.model == "gpt-realtime"
    monkeypatch.setenv("VOXGATE_REALTIME__THREADS", "2")
    with pytest.raises(
        ConfigError, match=r"realtime\.threads: not a setting of the openai-realtime"
    ):
        load_settings()


def test_a_copy_under_another_provider_is_refused_before_loading() -> None:
    from voxgate.pipeline import load_engines

    settings = Settings.model_validate(
        {"llm": {"provider": "openai", "base_url": "http://h/v1", "model": "m"}}
    )
    moved = settings.llm.model_copy(update={"provider": "llamacpp", "model": "other"})
    with pytest.raises(ConfigError, match="llm provider 'llamacpp' takes LlamaCppSettings, not"):
        load_engines(settings.model_copy(update={"llm": moved}), None)  # type: ignore[arg-type]


def test_settings_given_in_code_must_be_their_sections_engine() -> None:
    with pytest.raises(ValueError, match="not the settings of the 'piper' tts engine"):
        Settings(tts=FasterWhisperSettings.model_construct(provider="piper"))


# -- each engine's defaults are its own ---------------------------------------------------------


@pytest.mark.parametrize(("capability", "name"), ENGINES)
def test_each_engine_owns_a_settings_class_named_by_its_provider(
    capability: str, name: str
) -> None:
    model = registry.settings_model(capability, name)
    assert issubclass(model, BASES[capability])
    assert model.model_fields["provider"].default == name
    hints = typing.get_type_hints(model)
    assert typing.get_args(hints["provider"]) == (name,)  # Literal: the union's discriminator
    registry.factory(capability, name)  # and a factory that can be found


def _defaults(capability: str, name: str) -> EngineSettings:
    model = registry.settings_model(capability, name)
    required = {k: v for k, v in REQUIRED.items() if model.model_fields.get(k, None)}
    required = {k: v for k, v in required.items() if model.model_fields[k].is_required()}
    settings: EngineSettings = engine_settings(
        capability,  # type: ignore[arg-type]
        {"provider": name, **required},
    )
    return settings


CLOUD = [
    (cap, name)
    for cap, name in ENGINES
    if issubclass(registry.settings_model(cap, name), HttpApiSettings)
]
LOCAL = [
    (cap, name)
    for cap, name in ENGINES
    if (cap, name) not in CLOUD
    and name not in ("standin", "wyoming")  # wyoming: a server on the network, not HTTP
    and cap != "s2s"  # s2s: a cloud engine
]


@pytest.mark.parametrize(("capability", "name"), [e for e in CLOUD if e[0] != "s2s"])
def test_no_cloud_engine_defaults_to_a_local_model(capability: str, name: str) -> None:
    settings = _defaults(capability, name)
    assert settings.priced_model not in CATALOG  # type: ignore[attr-defined]
    voice = getattr(settings, "voice", None)
    assert voice not in CATALOG


@pytest.mark.parametrize(("capability", "name"), LOCAL)
def test_local_engines_have_no_endpoint_settings(capability: str, name: str) -> None:
    fields = registry.settings_model(capability, name).model_fields
    assert not {"base_url", "api_key", "extra_headers", "timeout_s"} & set(fields)


def test_whisper_tuning_is_faster_whispers_only() -> None:
    owners = {
        name
        for name in registry.provider_names("stt")
        if {"compute_type", "beam_size"} & set(registry.settings_model("stt", name).model_fields)
    }
    assert owners == {"faster-whisper"}


def test_cloud_engines_default_to_their_own_models() -> None:
    priced = {
        (cap, name): _defaults(cap, name).priced_model  # type: ignore[attr-defined]
        for cap, name in ENGINES
        if cap in ("stt", "llm", "tts")
    }
    assert priced[("stt", "faster-whisper")] == "whisper-tiny-en"
    assert priced[("stt", "deepgram")] == "nova-3"
    assert priced[("stt", "cloudflare")] == "@cf/openai/whisper"
    assert priced[("llm", "llamacpp")] == "qwen2.5-0.5b-instruct"
    assert priced[("tts", "piper")] == "en_US-joe-medium"
    assert priced[("tts", "openai")] == "gpt-4o-mini-tts"
    assert priced[("tts", "deepgram")] == "aura-2-thalia-en"
    assert priced[("tts", "elevenlabs")] == "eleven_flash_v2_5"
    assert priced[("tts", "cloudflare")] == "@cf/deepgram/aura-1"
    assert _defaults("tts", "openai").voice == "alloy"  # type: ignore[attr-defined]
    assert _defaults("tts", "elevenlabs").voice == "JBFqnCBsd6RMkjVDRZzb"  # type: ignore[attr-defined]


def test_loading_the_settings_loads_no_inference_library() -> None:
    """Only the configured engines' modules are imported, and those import their inference
    library when the engine is built, not when the settings are read."""
    code = (
        "import sys\n"
        "from voxgate.core.config import Settings\n"
        "Settings(realtime={})\n"
        "heavy = {'faster_whisper', 'ctranslate2', 'xllamacpp', 'piper', 'onnxruntime'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"
