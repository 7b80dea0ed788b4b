"""The batched Silero VAD gives each stream the probabilities its own unbatched stream gives, on
real speech, through frames of different sizes arriving out of step; and the batcher gathers
concurrent sessions' frames into few calls."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from voxgate.core.audio import int16_to_float, read_wav
from voxgate.core.capabilities import Float32Array, VADStream, can_batch
from voxgate.core.config import load_settings
from voxgate.core.errors import ConfigError
from voxgate.models import ModelStore
from voxgate.pipeline.audio_input import AudioInput
from voxgate.pipeline.vad_batch import VADBatcher
from voxgate.providers.silero_batch import batched_graph
from voxgate.providers.silero_vad import SileroVAD
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips

pytestmark = pytest.mark.models

TOLERANCE = 1e-4  # float32 sums in another order; probabilities are thresholded at ~0.35-0.5


@pytest.fixture(scope="module")
def vad_path() -> str:
    return str(ModelStore(load_settings().models_dir, show_progress=False).resolve("silero-vad"))


@pytest.fixture(scope="module")
def speech() -> list[Float32Array]:
    """Three real recordings (LibriVox, 16 kHz), with a second of silence between repeats."""
    clips = librivox_clips()
    if len(clips) < 3:
        pytest.skip(f"real speech is missing: {INSTALL_HINT}")
    out = []
    for clip in clips[:3]:
        pcm, rate = read_wav(clip.path)
        assert rate == 16_000
        audio = int16_to_float(pcm)
        out.append(np.concatenate([audio, np.zeros(16_000, dtype=np.float32), audio]))
    return out


def frames(audio: Float32Array, frame_samples: int) -> list[Float32Array]:
    """The audio cut into VAD chunks frame by frame, as a session's AudioInput cuts it."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    cutter = AudioInput(16_000, 512)
    step = frame_samples * 2
    return [cutter.push(pcm[i : i + step], 16_000) for i in range(0, len(pcm), step)]


def test_batched_matches_unbatched_on_real_speech(
    vad_path: str, speech: list[Float32Array]
) -> None:
    single = SileroVAD(vad_path)
    batched = SileroVAD(vad_path, batch=True)
    assert can_batch(batched) and not can_batch(single)
    # 100 ms, 60 ms and 20 ms frames: 3-4, 1-2 and 0-1 chunks a call, so calls mix lengths
    # (and streams with no new chunk at all).
    feeds = [frames(audio, size) for audio, size in zip(speech, (1600, 960, 320), strict=True)]
    reference = []
    for feed in feeds:
        stream = single.new_stream()
        reference.append(np.concatenate([stream.speech_probabilities(c) for c in feed]))
    streams: list[VADStream] = [batched.new_stream() for _ in feeds]
    got: list[list[Float32Array]] = [[] for _ in feeds]
    for tick in range(max(len(feed) for feed in feeds)):
        chunks = [
            feed[tick] if tick < len(feed) else np.zeros((0, 512), np.float32) for feed in feeds
        ]
        for i, probs in enumerate(batched.speech_probabilities_batch(streams, chunks)):
            assert probs.shape == (chunks[i].shape[0],)
            got[i].append(probs)
    for ref, parts in zip(reference, got, strict=True):
        out = np.concatenate(parts)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < TOLERANCE
        assert (ref > 0.5).mean() > 0.3  # it is speech the model hears, not silence compared
        assert (ref < 0.2).mean() > 0.1


def test_a_reset_stream_starts_over(vad_path: str, speech: list[Float32Array]) -> None:
    batched = SileroVAD(vad_path, batch=True)
    feed = frames(speech[0], 1600)[:40]
    stream = batched.new_stream()
    first = [batched.speech_probabilities_batch([stream], [c])[0] for c in feed]
    stream.reset()
    again = [batched.speech_probabilities_batch([stream], [c])[0] for c in feed]
    assert np.array_equal(np.concatenate(first), np.concatenate(again))


async def test_batcher_gathers_sessions_into_few_calls(
    vad_path: str, speech: list[Float32Array]
) -> None:
    batched = SileroVAD(vad_path, batch=True)
    single = SileroVAD(vad_path)
    feed = frames(speech[1], 1600)[:30]
    sessions = 40
    with ThreadPoolExecutor(1) as thread:
        batcher = VADBatcher(batched, thread)
        streams = [batched.new_stream() for _ in range(sessions)]

        async def session(index: int) -> Float32Array:
            out = []
            for chunks in feed[index % 5 :]:  # sessions out of step with each other
                out.append(await batcher.speech_probabilities(streams[index], chunks))
            return np.concatenate(out)

        results = await asyncio.gather(*(session(i) for i in range(sessions)))
    frames_fed = sum(len(feed[i % 5 :]) for i in range(sessions))
    assert batcher.calls < frames_fed / 4  # gathered, not one call per frame
    for index, result in enumerate(results):
        stream = single.new_stream()
        ref = np.concatenate([stream.speech_probabilities(c) for c in feed[index % 5 :]])
        assert np.abs(result - ref).max() < TOLERANCE


async def test_a_failing_call_fails_its_sessions_and_the_next_call_works(vad_path: str) -> None:
    batched = SileroVAD(vad_path, batch=True)
    good = batched.new_stream()
    with ThreadPoolExecutor(1) as thread:
        batcher = VADBatcher(batched, thread)
        wrong_width = np.zeros((2, 100), dtype=np.float32)  # not 512-sample chunks
        with pytest.raises(ValueError):
            await batcher.speech_probabilities(batched.new_stream(), wrong_width)
        probs = await batcher.speech_probabilities(good, np.zeros((3, 512), np.float32))
    assert probs.shape == (3,)


def test_a_graph_that_is_not_silero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Silero"):
        batched_graph(_tiny_graph())


def _tiny_graph() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    data: bytes = helper.make_model(graph).SerializeToString()
    return data
