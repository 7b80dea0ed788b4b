"""Every protocol has a close for every way a connection ends (the relay's own table is in
test_relay_connection.py): ElatoAI refuses at the upgrade with HTTP statuses, the proxy's /ws
closes with standard codes and says why in the reason."""

from __future__ import annotations

from voxgate.protocols import assistant_proxy, elato
from voxgate.protocols.closing import Close, CloseCode, Ending


def test_elato_refuses_at_the_upgrade_and_closes_with_standard_codes() -> None:
    statuses = {ending: elato.close_for(ending, "why").http_status for ending in Ending}
    assert {e: s for e, s in statuses.items() if s is not None} == {
        Ending.UNAUTHORIZED: 401,
        Ending.RATE_LIMITED: 429,
        Ending.SHUTTING_DOWN: 503,
        Ending.UNAVAILABLE: 503,
    }
    assert elato.close_for(Ending.CLIENT_ENDED) == Close(CloseCode.NORMAL, last=elato.SESSION_END)
    assert elato.close_for(Ending.RATE_LIMITED, "retry in 5 s").reason == (
        "too many connections; retry in 5 s"
    )
    codes = {ending: elato.close_for(ending).code for ending in Ending}
    assert codes[Ending.SERVER_SHUTDOWN] == 1001 and codes[Ending.SLOW_CLIENT] == 1008
    assert codes[Ending.TOO_LARGE] == 1009 and codes[Ending.INTERNAL] == 1011


def test_the_proxy_ws_close_table() -> None:
    # No timeout of its own (the silence timeout is below): that ending never happens on /ws.
    endings = set(Ending) - {Ending.TIMEOUT}
    codes = {ending: assistant_proxy.close_for(ending, "detail").code for ending in endings}
    assert codes == {
        Ending.CLIENT_ENDED: 1000,
        Ending.ASSISTANT_ENDED: 1000,
        Ending.SERVER_SHUTDOWN: 1001,
        Ending.SHUTTING_DOWN: 1013,
        Ending.UNAUTHORIZED: 1008,
        Ending.RATE_LIMITED: 1013,
        Ending.UNAVAILABLE: 1013,
        Ending.BAD_REQUEST: 1003,
        Ending.TOO_LARGE: 1009,
        Ending.SLOW_CLIENT: 1008,
        Ending.INTERNAL: 1011,
    }
    assert assistant_proxy.close_for(Ending.UNAUTHORIZED).reason == "invalid token"
    silence = assistant_proxy.SILENCE_CLOSE
    assert (silence.code, silence.reason) == (1000, "Silence timeout")
    assert silence.last == assistant_proxy.beep() and silence.linger_s > 0.2
