"""Silero VAD for many streams in one inference call.

The shipped v6 graph runs its LSTM over the rows of ``input`` as *time* (batch 1): one call is one
stream. :func:`batched_graph` rewrites it once, at load time, so one call serves many streams:

- ``input`` holds every stream's new chunks (each preceded by its 64-sample context), stream
  after stream, ``R`` rows; the encoder (STFT and convolutions, most of the work) runs on those
  rows only, with no padding;
- ``rows`` (int64, ``[T * B]``) lays the encoded rows out time-major for the LSTM, ``T`` steps by
  ``B`` streams; the index ``R`` picks a zero row for a stream with fewer than ``T`` chunks;
- ``lengths`` (int32, ``[B]``) is each stream's chunk count: the LSTM's ``sequence_lens``, so
  ``hn``/``cn`` are each stream's state after its own last chunk;
- ``h``/``c`` are ``[1, B, 128]``, one row per stream; ``speech_probs`` is ``[B * T]``, stream-major.

The encoder's convolutions become one matrix product over all rows (:mod:`onnx_rewrite`: the same
sums, scheduled for a batch); the weights are the model's own. A stream's probabilities match the
one-stream graph's within float rounding (tests/providers/test_silero_batch.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from voxgate.core.capabilities import Float32Array
from voxgate.core.errors import ConfigError
from voxgate.providers.onnx_rewrite import convs_as_matmuls

if TYPE_CHECKING:
    import onnxruntime as ort

HIDDEN = 128
CONTEXT_SAMPLES = 64  # the model looks at the tail of the previous chunk, as trained
CHUNK_SAMPLES = 512


class StreamState:
    """One stream's recurrent state and audio context; one row of a batched call."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros((1, 1, HIDDEN), dtype=np.float32)
        self.c = np.zeros((1, 1, HIDDEN), dtype=np.float32)
        self.context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def model_rows(self, chunks: Float32Array) -> Float32Array:
        """Chunk i preceded by the 64 samples before it, as the model takes them; moves the
        context on."""
        flat = np.concatenate([self.context, chunks.reshape(-1)])
        starts = np.arange(chunks.shape[0]) * CHUNK_SAMPLES
        index = starts[:, None] + np.arange(CHUNK_SAMPLES + CONTEXT_SAMPLES)[None, :]
        self.context = flat[-CONTEXT_SAMPLES:].copy()
        rows: Float32Array = flat[index].astype(np.float32)
        return rows


def batched_graph(model: bytes) -> bytes:
    """The Silero v6 ONNX graph rewritten to take many streams at once (see the module doc)."""
    import onnx  # here: only a batching VAD pays for importing it
    from onnx import TensorProto, helper, numpy_helper

    graph_model = onnx.load_from_string(model)
    graph = graph_model.graph
    lstms = [node for node in graph.node if node.op_type == "LSTM"]
    names = {value.name for value in graph.input}
    if len(lstms) != 1 or not {"input", "h", "c"} <= names:
        raise ConfigError("not a Silero v6 VAD graph (one LSTM; inputs input, h, c): cannot batch")
    lstm = lstms[0]
    encoded = lstm.input[0]  # [R, 1, 128]: the LSTM read the rows as its time axis
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "vb_axis1"),
            numpy_helper.from_array(np.zeros((1, HIDDEN), dtype=np.float32), "vb_zero_row"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "vb_from"),
            numpy_helper.from_array(np.array([3], dtype=np.int64), "vb_to"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "vb_any"),
        ]
    )
    added = [
        helper.make_node("Squeeze", [encoded, "vb_axis1"], ["vb_encoded"]),  # [R, 128]
        helper.make_node("Concat", ["vb_encoded", "vb_zero_row"], ["vb_padded"], axis=0),
        helper.make_node("Gather", ["vb_padded", "rows"], ["vb_laid_out"], axis=0),  # [T*B, 128]
        helper.make_node("Shape", ["h"], ["vb_h_shape"]),  # [1, B, 128]
        helper.make_node("Slice", ["vb_h_shape", "vb_from", "vb_to"], ["vb_b_hidden"]),
        helper.make_node("Concat", ["vb_any", "vb_b_hidden"], ["vb_shape"], axis=0),
        helper.make_node("Reshape", ["vb_laid_out", "vb_shape"], ["vb_steps"]),  # [T, B, 128]
    ]
    at = list(graph.node).index(lstm)
    for offset, node in enumerate(added):
        graph.node.insert(at + offset, node)
    lstm.input[0] = "vb_steps"
    while len(lstm.input) < 5:
        lstm.input.append("")
    lstm.input[4] = "lengths"
    graph.input.extend(
        [
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["slots"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
        ]
    )
    for value in [*graph.input, *graph.output]:
        if value.name in ("h", "c", "hn", "cn"):
            dim = value.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"
    convs_as_matmuls(graph_model, before=lstm)  # the encoder: one product for all rows
    onnx.checker.check_model(graph_model)
    data: bytes = graph_model.SerializeToString()
    return data


def run_batch(
    session: ort.InferenceSession, states: Sequence[StreamState], chunks: Sequence[Float32Array]
) -> list[Float32Array]:
    """Speech probabilities for each stream's chunks (``[n_i, 512]``), in one call of the
    batched graph; each state moves on as it would have on its own."""
    for rows_in in chunks:
        if rows_in.ndim != 2 or rows_in.shape[1] != CHUNK_SAMPLES:
            raise ValueError(f"VAD chunks must be [n, {CHUNK_SAMPLES}], not {rows_in.shape}")
    results: list[Float32Array] = [np.zeros(0, dtype=np.float32) for _ in states]
    live = [i for i, rows in enumerate(chunks) if rows.shape[0] > 0]
    if not live:
        return results
    lengths = np.array([chunks[i].shape[0] for i in live], dtype=np.int32)
    steps = int(lengths.max())
    # Each chunk preceded by the 64 samples before it (StreamState.model_rows for all streams at
    # once: this thread holds the GIL, and the event loop waits, for as long as this takes).
    audio = np.concatenate([chunks[i] for i in live]).astype(np.float32, copy=False)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tails = np.empty((audio.shape[0], CONTEXT_SAMPLES), dtype=np.float32)
    tails[1:] = audio[:-1, -CONTEXT_SAMPLES:]
    tails[starts] = np.stack([states[i].context for i in live])
    model_rows = np.concatenate([tails, audio], axis=1)
    # Time-major layout; a stream past its last chunk reads the zero row (index R).
    step = np.arange(steps)[:, None]
    rows: npt.NDArray[np.int64] = np.where(
        step < lengths[None, :], starts[None, :] + step, model_rows.shape[0]
    ).astype(np.int64)
    h = np.concatenate([states[i].h for i in live], axis=1)
    c = np.concatenate([states[i].c for i in live], axis=1)
    probs, hn, cn = session.run(
        None,
        {"input": model_rows, "rows": rows.reshape(-1), "lengths": lengths, "h": h, "c": c},
    )
    by_stream = np.asarray(probs, dtype=np.float32).reshape(len(live), steps)
    contexts = audio[starts + lengths - 1, -CONTEXT_SAMPLES:]  # each stream's last 64 samples
    for column, i in enumerate(live):
        state = states[i]
        state.h = np.ascontiguousarray(hn[:, column : column + 1])
        state.c = np.ascontiguousarray(cn[:, column : column + 1])
        state.context = contexts[column]
        results[i] = by_stream[column, : lengths[column]]
    return results
