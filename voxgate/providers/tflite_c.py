"""The TensorFlow Lite C runtime, bound with ctypes: just what a quantized streaming model needs.

Why this library, and why bound here: the wake-word models are TFLite files (with resource
variables for their streaming state), so a TFLite runtime is unavoidable. pymicro-wakeword's wheel
ships the C library (``libtensorflowlite_c.so``, 4.8 MB, Apache-2.0) next to its models; Google's
Python runtime (``ai-edge-litert``, 22 MB) would add protobuf, flatbuffers and ml_dtypes to every
install for the same interpreter. The library is a runtime, not a model: it is found through
``importlib.metadata`` like the model files and its sha256 is checked before it is loaded, and none
of the package's Python code is imported.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.core.errors import ModelError

PACKAGE = "pymicro-wakeword"
_LIBRARIES: dict[str, tuple[str, str]] = {
    # platform → (path in the distribution's RECORD, pinned sha256)
    "linux-x86_64": (
        "pymicro_wakeword/lib/libtensorflowlite_c.so",
        "25465edb5cd7aadd00249d4d28f1d922ce5cc90195ad4403458111dd63493bae",
    ),
}
_TYPES: dict[int, type[np.integer]] = {3: np.uint8, 9: np.int8}  # kTfLiteUInt8, kTfLiteInt8
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}


class _Quantization(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


def _platform() -> str:
    machine = os.uname().machine if hasattr(os, "uname") else ""
    return f"{sys.platform.removesuffix('2')}-{machine}"  # "linux-x86_64"


def library_path() -> Path:
    """The runtime in the installed wheel, hash checked; ModelError naming the fix if not."""
    where = _platform()
    if where not in _LIBRARIES:
        raise ModelError(f"no pinned TFLite runtime for {where} (known: {', '.join(_LIBRARIES)})")
    record_path, sha256 = _LIBRARIES[where]
    try:
        files = metadata.distribution(PACKAGE).files or []
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"the wake-word engine needs {PACKAGE}, not installed; install with: "
            f"pip install {PACKAGE}==2.5.0"
        ) from None
    for entry in files:
        if entry.as_posix() == record_path:
            path = Path(str(entry.locate()))
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            if digest != sha256:
                raise ModelError(
                    f"{path} does not match its pinned sha256 (got {digest or 'nothing'}); "
                    f"reinstall with: pip install --force-reinstall {PACKAGE}==2.5.0"
                )
            return path
    raise ModelError(f"{PACKAGE} has no {record_path}: not the expected version (2.5.0)")


def library() -> ctypes.CDLL:
    """The runtime, loaded once per process."""
    with _lock:
        if "lib" not in _loaded:
            _loaded["lib"] = _declare(ctypes.CDLL(str(library_path())))
        return _loaded["lib"]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
    signatures: dict[str, tuple[list[object], object]] = {
        "TfLiteModelCreate": ([p, size], p),
        "TfLiteModelDelete": ([p], None),
        "TfLiteInterpreterCreate": ([p, p], p),
        "TfLiteInterpreterDelete": ([p], None),
        "TfLiteInterpreterAllocateTensors": ([p], ctypes.c_int),
        "TfLiteInterpreterInvoke": ([p], ctypes.c_int),
        "TfLiteInterpreterGetInputTensor": ([p, i32], p),
        "TfLiteInterpreterGetOutputTensor": ([p, i32], p),
        "TfLiteTensorType": ([p], i32),
        "TfLiteTensorDim": ([p, i32], i32),
        "TfLiteTensorByteSize": ([p], size),
        "TfLiteTensorQuantizationParams": ([p], _Quantization),
        "TfLiteTensorCopyFromBuffer": ([p, p, size], ctypes.c_int),
        "TfLiteTensorCopyToBuffer": ([p, p, size], ctypes.c_int),
    }
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = args
        function.restype = result
    return lib


class Model:
    """A TFLite model in memory, shared by every interpreter made from it."""

    def __init__(self, data: bytes, name: str) -> None:
        self.name = name
        self._lib = library()
        # TFLite reads the model in place: the buffer must live as long as the model.
        self._buffer = ctypes.create_string_buffer(data, len(data))
        self.handle = self._lib.TfLiteModelCreate(self._buffer, len(data))
        if not self.handle:
            raise ModelError(f"TFLite cannot read the model {name}")

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self._lib.TfLiteModelDelete(self.handle)


@dataclass(frozen=True, slots=True)
class _Tensor:
    handle: int
    dtype: type[np.integer]
    scale: float
    zero_point: int
    nbytes: int


class QuantizedInterpreter:
    """One interpreter (its own tensors and variables) of a model with one quantized input and
    one quantized output: floats in, floats out."""

    def __init__(self, model: Model) -> None:
        self._model = model  # kept alive while the interpreter is
        self._lib = lib = model._lib
        self._handle = lib.TfLiteInterpreterCreate(model.handle, None)
        if not self._handle or lib.TfLiteInterpreterAllocateTensors(self._handle) != 0:
            raise ModelError(f"TFLite cannot run the model {model.name}")
        self._input = self._tensor(lib.TfLiteInterpreterGetInputTensor(self._handle, 0))
        self._output = self._tensor(lib.TfLiteInterpreterGetOutputTensor(self._handle, 0))
        self.input_frames = int(lib.TfLiteTensorDim(self._input.handle, 1))
        """Feature frames the model takes per call (its stride)."""
        self._out = np.empty(
            self._output.nbytes // np.dtype(self._output.dtype).itemsize, dtype=self._output.dtype
        )

    def _tensor(self, handle: int | None) -> _Tensor:
        lib = self._lib
        if not handle:
            raise ModelError(f"TFLite model {self._model.name} has no such tensor")
        dtype = _TYPES.get(int(lib.TfLiteTensorType(handle)))
        if dtype is None:
            raise ModelError(f"TFLite model {self._model.name}: not an int8/uint8 quantized model")
        quantization = lib.TfLiteTensorQuantizationParams(handle)
        nbytes = int(lib.TfLiteTensorByteSize(handle))
        return _Tensor(handle, dtype, quantization.scale, quantization.zero_point, nbytes)

    def run(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Quantize ``features`` (exactly the input's size), invoke, dequantize the output."""
        tensor = self._input
        info = np.iinfo(tensor.dtype)
        quantized = np.clip(
            np.round(features / tensor.scale + tensor.zero_point), info.min, info.max
        ).astype(tensor.dtype)
        if quantized.nbytes != tensor.nbytes:
            raise ValueError(f"input of {quantized.nbytes} bytes, the model takes {tensor.nbytes}")
        lib = self._lib
        lib.TfLiteTensorCopyFromBuffer(tensor.handle, quantized.ctypes.data, tensor.nbytes)
        if lib.TfLiteInterpreterInvoke(self._handle) != 0:
            raise ModelError(f"TFLite failed running {self._model.name}")
        out = self._output
        lib.TfLiteTensorCopyToBuffer(out.handle, self._out.ctypes.data, out.nbytes)
        result: npt.NDArray[np.float32] = (
            self._out.astype(np.float32) - out.zero_point
        ) * out.scale
        return result

    def close(self) -> None:
        if self._handle:
            self._lib.TfLiteInterpreterDelete(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()
