"""The turn engine: audio in → VAD → end of turn → STT → LLM → sentences → TTS → audio out."""

from voxgate.pipeline.engines import Engines, load_engines
from voxgate.pipeline.history import Conversation
from voxgate.pipeline.session import TurnSession

__all__ = ["Conversation", "Engines", "TurnSession", "load_engines"]
