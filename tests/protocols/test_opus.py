"""Opus through PyAV, checked against libopus itself (opuslib on Debian's libopus0), as a device
would decode it."""

from __future__ import annotations

import numpy as np
import opuslib
import opuslib.api.decoder as opus_api
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.core.errors import ProtocolError
from voxgate.protocols.opus import OpusDecoder, OpusPacketizer

RATE_HZ = 24_000
FRAME = 2_880  # 120 ms at 24 kHz


def sine(ms: float, rate_hz: int = RATE_HZ, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate_hz * ms / 1000)) / rate_hz
    return (np.sin(2 * np.pi * hz * t) * 0.4 * 32767).astype(np.int16)


def pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def push_in_chunks(packetizer: OpusPacketizer, data: bytes, sizes: list[int]) -> list[bytes]:
    packets: list[bytes] = []
    offset, index = 0, 0
    while offset < len(data):
        size = sizes[index % len(sizes)]
        packets += packetizer.push(data[offset : offset + size])
        offset += size
        index += 1
    return packets


def libopus_decode(packets: list[bytes], rate_hz: int) -> np.ndarray:
    decoder = opuslib.Decoder(rate_hz, 1)
    frame = rate_hz * 120 // 1000
    out = b"".join(decoder.decode(packet, frame) for packet in packets)
    return np.frombuffer(out, dtype="<i2").astype(np.int16)


def best_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> float:
    """Normalised correlation at the best lag (Opus adds a few ms of look-ahead delay)."""
    ref = reference.astype(np.float64)
    out = decoded.astype(np.float64)
    length = min(len(ref), len(out)) - max_lag
    best = -1.0
    for lag in range(max_lag):
        a, b = ref[:length], out[lag : lag + length]
        best = max(best, float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)))
    return best


def test_sine_in_odd_chunks_survives_libopus_decoding_at_24_and_48_khz() -> None:
    source = sine(1000, hz=330.0)  # 1 s: 8 whole frames and a third
    packetizer = OpusPacketizer()
    packets = push_in_chunks(packetizer, pcm(source), [64, 1, 333, 7, 2048])
    assert len(packets) == 8
    assert packetizer.pending_samples == len(source) - 8 * FRAME
    packets += packetizer.flush()
    assert len(packets) == 9  # the last third of a frame, zero-padded to a whole one
    assert packetizer.flush() == []

    state = opus_api.create_state(RATE_HZ, 1)
    for packet in packets:  # each packet is one 120 ms frame, as libopus reads it
        assert opus_api.get_nb_samples(state, packet, len(packet)) == FRAME

    # 24 kbps: 120 ms of audio in about 360 bytes.
    kbps = sum(map(len, packets)) * 8 / (len(packets) * 0.120) / 1000
    assert 18 <= kbps <= 30, kbps

    at_24 = libopus_decode(packets, 24_000)
    assert len(at_24) == len(packets) * FRAME
    assert best_correlation(source, at_24, max_lag=400) > 0.9
    assert np.abs(at_24[-FRAME // 2 :]).max() < 2000  # the padding decodes to (near) silence

    at_48 = libopus_decode(packets, 48_000)
    assert len(at_48) == 2 * len(at_24)
    assert best_correlation(sine(1000, 48_000, hz=330.0), at_48, max_lag=800) > 0.9


def test_exact_frames_need_no_flush_and_reset_drops_a_partial_frame() -> None:
    packetizer = OpusPacketizer()
    assert len(packetizer.push(pcm(sine(240)))) == 2
    assert packetizer.flush() == []
    assert packetizer.push(pcm(sine(60))) == []
    packetizer.reset()
    assert packetizer.pending_samples == 0 and packetizer.flush() == []
    # An odd byte is kept for the next push, not lost.
    data = pcm(sine(120))
    assert packetizer.push(data[:1001]) == [] and len(packetizer.push(data[1001:])) == 1


def test_pyav_decoder_round_trip_at_16_khz() -> None:
    source = sine(600, hz=300.0)
    packetizer = OpusPacketizer()
    packets = packetizer.push(pcm(source)) + packetizer.flush()
    decoder = OpusDecoder(16_000)
    out = b"".join(decoder.decode(packet) for packet in packets) + decoder.flush()
    decoded = np.frombuffer(out, dtype="<i2")
    assert abs(len(decoded) - len(packets) * 1920) <= 2
    reference = sine(600, 16_000, hz=300.0)
    assert best_correlation(reference, decoded, max_lag=300) > 0.9


def test_other_frame_sizes_and_rates_for_other_protocols() -> None:
    packetizer = OpusPacketizer(16_000, frame_ms=60)
    assert packetizer.frame_samples == 960
    packets = packetizer.push(pcm(sine(120, 16_000)))
    assert len(packets) == 2
    decoder = opuslib.Decoder(16_000, 1)
    assert len(decoder.decode(packets[0], 960)) == 960 * 2
    with pytest.raises(ValueError, match="Hz"):
        OpusPacketizer(22_050)
    with pytest.raises(ValueError, match="ms"):
        OpusPacketizer(frame_ms=30)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_rejects_garbage_only_with_protocol_error(packet: bytes) -> None:
    decoder = OpusDecoder()
    try:
        out = decoder.decode(packet)
    except ProtocolError:
        return
    assert len(out) % 2 == 0
