"""The HTTP plumbing the cloud providers share: the ``base_url`` check, one pooled client with the
auth headers, and turning HTTP and transport failures into :class:`ProviderError`.

No retries here: an error's ``retryable`` tells the layer above (which owns retries and fallback)
whether trying again may help.
"""

from __future__ import annotations

import httpx

from voxgate.core.engine_settings import HttpApiSettings
from voxgate.core.errors import ConfigError, ErrorCode, ProviderError

_BODY_SNIPPET_CHARS = 200


class HttpApi:
    """One server's API: ``{base_url}/...`` over a pooled client shared by all sessions.

    ``section`` names the settings section (``stt``) in messages: ``stt.base_url``, and "the STT
    server at ..." for the server. ``example_url`` is the example a missing ``base_url``'s message
    gives.
    """

    def __init__(
        self,
        section: str,
        settings: HttpApiSettings,
        *,
        code: ErrorCode,
        example_url: str = "https://api.openai.com/v1",
        accept: str | None = None,
        provider: str = "openai",
        auth_header: tuple[str, str] = ("Authorization", "Bearer "),
        key_required: bool = False,
    ) -> None:
        """``provider`` names the provider in messages; the key goes out as ``{auth_header[0]}: {auth_header[1]}{key}``
        (``("Authorization", "Token ")`` for Deepgram, ``("xi-api-key", "")`` for ElevenLabs);
        ``key_required`` makes a missing ``api_key`` a :class:`ConfigError`."""
        what = section.upper()
        base_url = settings.base_url
        if not base_url:
            raise ConfigError(
                f"the {provider} {what} provider needs {section}.base_url, e.g. {example_url}"
            )
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{section}.base_url must start with http:// or https://, got {base_url!r}"
            )
        if key_required and not (settings.api_key and settings.api_key.get_secret_value()):
            raise ConfigError(
                f"the {provider} {what} provider needs {section}.api_key "
                f"(e.g. the environment variable VOXGATE_{what}__API_KEY)"
            )
        self.base_url = base_url.rstrip("/")
        self.server = f"the {what} server at {self.base_url}"
        """How messages name the server: ``the STT server at https://...``."""
        self.code = code
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else ""
        headers = {"Accept": accept} if accept else {}
        if self._api_key:
            header, prefix = auth_header
            headers[header] = f"{prefix}{self._api_key}"
        # Last, so a server wanting another auth scheme (e.g. Azure's ``api-key``) can get it.
        headers.update(settings.extra_headers)
        # One pooled client: sessions reuse connections instead of a TCP/TLS handshake per turn.
        # On a streamed reply the read timeout bounds the wait for each next piece, not the whole.
        self.client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(settings.timeout_s))

    def url(self, path: str) -> str:
        """The address of ``path`` (e.g. ``/audio/speech``) on this server."""
        return f"{self.base_url}{path}"

    async def aclose(self) -> None:
        await self.client.aclose()

    def snippet(self, text: str) -> str:
        """A short, single-line piece of server text, with the API key blanked out: some servers
        echo the key they rejected, and error messages end up in logs and client events."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        text = " ".join(text.split())
        if len(text) > _BODY_SNIPPET_CHARS:
            text = text[:_BODY_SNIPPET_CHARS] + "..."
        return text

    def http_error(self, response: httpx.Response) -> ProviderError:
        """The error for an HTTP error status; the body must have been read."""
        status = response.status_code
        message = f"{self.server} answered HTTP {status}"
        retry_after = response.headers.get("Retry-After")
        if status == 429 and retry_after:
            message += f" (retry after {retry_after.strip()[:40]})"
        body = self.snippet(response.text)
        return ProviderError(
            f"{message}: {body}" if body else message,
            code=self.code,
            retryable=status == 429 or status >= 500,
            retry_after_s=retry_after_seconds(retry_after),
        )

    def failure(self, message: str, exc: httpx.HTTPError) -> ProviderError:
        """A transport failure (connect, timeout, lost connection): ``message: detail``."""
        detail = self.snippet(str(exc)) or type(exc).__name__
        return ProviderError(f"{message}: {detail}", code=self.code, retryable=True)

    def transport_failure(self, exc: httpx.HTTPError) -> ProviderError:
        """The error for a request that got no (complete) answer, saying which way it failed."""
        if isinstance(exc, httpx.ConnectError):
            return self.failure(f"cannot connect to {self.server}", exc)
        if isinstance(exc, httpx.TimeoutException):
            return self.failure(f"{self.server} timed out", exc)
        # Mostly a connection lost mid-reply.
        return self.failure(f"connection to {self.server} failed", exc)


def describe(exc: Exception) -> str:
    """An exception's message, or its type's name: some httpx errors (e.g. a read on a reset
    socket) have an empty message."""
    return str(exc) or type(exc).__name__


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds; the HTTP-date form (rare from APIs) counts as unknown."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
