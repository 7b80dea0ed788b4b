"""voxgate: a self-hosted voice-AI gateway.

Devices stream microphone audio in; voxgate finds the end of the turn, transcribes it, asks an LLM,
and streams the spoken answer back sentence by sentence.
"""

__version__ = "0.1.0"
