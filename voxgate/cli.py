"""The ``voxgate`` command."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from voxgate.client import client_command
from voxgate.commands import add_store_commands
from voxgate.commands.bench import bench_app
from voxgate.commands.common import ConfigOption, console, err_console, fail, settings_from
from voxgate.commands.llm_server import llm_server
from voxgate.commands.profiles import ProfileOption, apply_profile
from voxgate.core.audio import read_wav, write_wav
from voxgate.core.errors import VoxgateError
from voxgate.core.events import TurnTimings
from voxgate.models import ModelStore
from voxgate.pipeline import TurnSession, load_engines
from voxgate.pipeline.drive import spoken_turn
from voxgate.pipeline.engines import warm_up

app = typer.Typer(help="voxgate: a self-hosted voice-AI gateway.", no_args_is_help=True)


@app.command()
def talk(
    question: Annotated[Path, typer.Argument(help="A WAV file (16-bit PCM) with the question.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the reply here.")
    ] = None,
    realtime: Annotated[
        bool, typer.Option(help="Send the audio at real-time pace, as a device would.")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """One spoken turn, locally: transcript, reply and where the time went."""
    settings = settings_from(config)
    try:
        samples, rate = read_wav(question)
        started = time.perf_counter()
        engines = load_engines(settings, ModelStore(settings.models_dir))
    except VoxgateError as exc:
        fail(str(exc))
    output_rate = engines.tts.sample_rate_hz

    async def run() -> None:
        await warm_up(engines, settings.character.system_prompt)
        console.print(f"engines ready in {time.perf_counter() - started:.1f} s")
        session = TurnSession(
            engines, settings.turn, settings.character, output_rate_hz=output_rate
        )
        result = await spoken_turn(session, samples, rate, realtime=realtime)
        await session.close()
        for error in result.errors:
            err_console.print(f"[yellow]{error.code}[/]: {error.message}")
        if not result.transcript:
            fail("no speech heard in the clip")
        console.print(f"[bold]you said:[/] {result.transcript}")
        console.print(f"[bold]reply:[/]    {result.reply_text}")
        if result.timings is not None:
            console.print(timings_table(result.timings))
        if output is not None and result.audio:
            write_wav(output, result.pcm, result.sample_rate_hz)
            console.print(f"reply audio written to {output}")

    try:
        asyncio.run(run())
    finally:
        engines.close()


def timings_table(timings: TurnTimings) -> Table:
    table = Table("stage", "ms", title="where the time went")
    for name in TurnTimings.__dataclass_fields__:
        value = getattr(timings, name)
        if name == "speculative":
            table.add_row(name, "yes" if value else "no")
        else:
            table.add_row(
                name.removesuffix("_ms").replace("_", " "), "-" if value is None else f"{value:.0f}"
            )
    return table


@app.command()
def models(
    prepare: Annotated[bool, typer.Option(help="Prepare the default models now.")] = False,
    verify: Annotated[bool, typer.Option(help="Re-hash every prepared model.")] = False,
    config: ConfigOption = None,
) -> None:
    """The embedded models: what they are, where, how big, prepared or not."""
    settings = settings_from(config)
    store = ModelStore(settings.models_dir)
    try:
        if prepare:
            store.prepare_defaults()
        if verify:
            for status in store.statuses():
                if status.prepared:
                    store.verify(status.spec.name)
    except VoxgateError as exc:
        fail(str(exc))
    table = Table("name", "kind", "default", "size", "prepared", "licence", "path / problem")
    for status in store.statuses():
        spec = status.spec
        table.add_row(
            spec.name,
            spec.kind,
            "yes" if spec.default else "",
            f"{status.size_bytes / 1e6:.0f} MB",
            "[green]yes[/]" if status.prepared else "[yellow]no[/]",
            spec.license,
            status.problem or str(status.path),
        )
    console.print(table)
    console.print(f"cache: {store.cache_dir}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    log_level: Annotated[
        str | None, typer.Option(envvar="LOG_LEVEL", help="debug, info, warning, error.")
    ] = None,
    show_admin_link: Annotated[
        bool,
        typer.Option(help="Print the page links with the admin token (always on the first start)."),
    ] = False,
    wyoming: Annotated[
        bool,
        typer.Option(
            "--wyoming", help="Also serve Home Assistant's Wyoming protocol ([wyoming] settings)."
        ),
    ] = False,
    profile: ProfileOption = "default",
    config: ConfigOption = None,
) -> None:
    """Run the server: every device protocol on one port (and Wyoming on its own)."""
    from voxgate.server.secrets_file import with_generated_secrets
    from voxgate.server.serve import announcement
    from voxgate.server.serve import serve as run_server

    overrides: dict[str, object] = {}
    if log_level:
        overrides["log_level"] = log_level.upper()
    try:
        settings = apply_profile(settings_from(config), profile)
    except ValueError as exc:
        fail(str(exc))
    server = settings.server.model_copy(
        update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
    )
    # The token goes to the terminal once, when it is made; after that on request only, so
    # that a supervisor's journal does not collect it at every restart.
    if wyoming:
        overrides["wyoming"] = settings.wyoming.model_copy(update={"enabled": True})
    first_start = server.admin_token is None and not (settings.data_dir / "admin_token").exists()
    settings = with_generated_secrets(settings.model_copy(update={"server": server, **overrides}))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    console.print("[bold]voxgate[/] is loading its models; devices connect to:")
    for line in announcement(settings, with_token=show_admin_link or first_start):
        # soft_wrap: a long link stays on its label's line (a wrapped one is not clickable).
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    run_server(settings)


@app.command("admin-link")
def admin_link(config: ConfigOption = None) -> None:
    """Print the talk and admin page links with the admin token in them."""
    from voxgate.server.secrets_file import with_generated_secrets
    from voxgate.server.serve import page_links

    settings = with_generated_secrets(settings_from(config))
    for label, url in page_links(settings, with_token=True):
        console.print(f"{label:20} {url}")


app.command("client", help="Talk to a voxgate server over the relay protocol, with a WAV file.")(
    client_command
)

app.command("llm-server")(llm_server)
add_store_commands(app)
app.add_typer(bench_app, name="bench")


@app.command()
def sample_path() -> None:
    """Print the path of the shipped sample question (a WAV)."""
    console.print(str(SAMPLE_QUESTION))


SAMPLE_QUESTION = Path(__file__).parent / "samples" / "question.wav"
