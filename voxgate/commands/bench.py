"""``voxgate bench``: benchmarks. ``voxgate bench providers`` compares the configured engines on
the same speech clips, prompts and sentences (voxgate/benchmarks/)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from voxgate.benchmarks import candidates as cands
from voxgate.benchmarks.providers import PROMPTS, SENTENCES, Inputs, run_benchmark
from voxgate.benchmarks.quality import QUESTIONS
from voxgate.benchmarks.quality_report import DEFAULT, select_prompts
from voxgate.benchmarks.quality_report import table as quality_table
from voxgate.benchmarks.quality_run import run_quality, write_json
from voxgate.benchmarks.report import notes, rich_tables, write_report
from voxgate.commands.common import ConfigOption, console, fail, say, settings_from
from voxgate.commands.profiles import apply_profile, local_llm, quality_models
from voxgate.core.errors import VoxgateError
from voxgate.models import ModelStore
from voxgate.speech_corpus import INSTALL_HINT, librivox_clips
from voxgate.store.characters import BUILT_IN

CHARACTER_PROMPTS = {character.slug: character.system_prompt for character in BUILT_IN}

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@bench_app.callback()
def bench() -> None:
    """Benchmarks: measure engines on real speech."""
    # A callback keeps ``bench`` a command group even with one command in it.


def default_output() -> Path:
    return Path("bench/results") / f"providers-{time.strftime('%Y-%m-%d-%H%M%S')}"


@bench_app.command("providers")
def providers(
    engines: Annotated[
        Path | None,
        typer.Option(
            "--engines",
            "-e",
            # escape(): typer renders help as rich markup, where [stt] would be a style tag.
            help=escape(
                "TOML file of candidates: [[stt]], [[llm]], [[tts]] sections (and a [judge] "
                "STT); default: each capability's configured engine and its fallbacks."
            ),
        ),
    ] = None,
    standin: Annotated[
        bool, typer.Option("--standin", help="Add the instant stand-in engines.")
    ] = False,
    clips: Annotated[int, typer.Option(min=1, help="LibriVox clips per STT engine.")] = 5,
    prompts: Annotated[
        int, typer.Option(min=1, max=len(PROMPTS), help="Prompts per LLM engine.")
    ] = len(PROMPTS),
    sentences: Annotated[
        int, typer.Option(min=1, max=len(SENTENCES), help="Sentences per TTS engine.")
    ] = len(SENTENCES),
    rounds: Annotated[int, typer.Option(min=1, help="Times each input is sent.")] = 1,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Directory for results.json, providers.png and providers.html "
            "(default: bench/results/providers-DATE-TIME under the current directory).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Send the same speech clips, prompts and sentences to every candidate engine; compare
    latency, word error rate, TTS intelligibility and cost. Cloud engines without a key are
    listed as skipped."""
    settings = settings_from(config)
    candidates = cands.from_settings(settings)
    try:
        if engines is not None:
            candidates = cands.read_engines_file(engines, candidates)
    except VoxgateError as exc:
        fail(str(exc))
    if standin:
        candidates = cands.with_standin(candidates)
    corpus = librivox_clips()
    if not corpus:
        fail(f"no LibriVox clips to transcribe: {INSTALL_HINT}")
    inputs = Inputs(
        clips=corpus[:clips],
        prompts=PROMPTS[:prompts],
        sentences=SENTENCES[:sentences],
        system_prompt=settings.character.system_prompt,
        rounds=rounds,
    )
    # The store's own copy progress bar would clash with this one (rich shows one at a time).
    models = ModelStore(settings.models_dir, show_progress=False)
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(TextColumn("{task.description:<60.60}"), *columns, console=console) as bar:
        task = bar.add_task("starting", total=inputs.steps(candidates))

        def advance(step: str) -> None:
            bar.update(task, advance=1, description=step)

        try:
            result = asyncio.run(
                run_benchmark(candidates, inputs, settings.prices, models, advance)
            )
        except VoxgateError as exc:
            fail(str(exc))
    for table in rich_tables(result):
        console.print(table)
    for line in notes(result):
        say(f"[yellow]note:[/] {escape(line)}")
    try:
        paths = write_report(result, output or default_output())
    except OSError as exc:
        fail(f"cannot write the results: {exc}")
    for kind, path in paths.items():
        console.print(f"{kind:>4}: {path}")


@bench_app.command("quality")
def quality(
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="An LLM from `voxgate models` or a GGUF path (repeat; default: the configured "
            "one, plus the quality profile's when it is installed).",
        ),
    ] = None,
    characters: Annotated[
        list[str] | None,
        typer.Option(
            "--character",
            help="default (the configuration's prompt) or a built-in character's slug "
            f"(repeat; default: all of {', '.join([DEFAULT, *CHARACTER_PROMPTS])}).",
        ),
    ] = None,
    questions: Annotated[
        int, typer.Option(min=1, max=len(QUESTIONS), help="The first N questions.")
    ] = len(QUESTIONS),
    max_tokens: Annotated[
        int,
        typer.Option(
            min=1, help="Reply length cap: the answer is in the first sentence, the rest is talk."
        ),
    ] = 60,
    temperature: Annotated[
        float | None, typer.Option(min=0, help="Sampling temperature (default: the configured).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="JSON results (default: bench/results/quality-DATE.json)."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Only this profile's LLM (default, quality)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Ask short spoken-style questions of each LLM with each character prompt; print the
    fraction answered right (by the words a right answer must and must not contain), reply
    length and first-token latency."""
    settings = settings_from(config)
    if profile is not None:
        try:
            settings = apply_profile(settings, profile)
        except ValueError as exc:
            fail(str(exc))
        models = models or [settings.llm.model]
    store = ModelStore(settings.models_dir, show_progress=False)
    names = models or quality_models(settings.llm.model, store)
    update: dict[str, object] = {"seed": 0, "max_tokens": max_tokens}
    if temperature is not None:
        update["temperature"] = temperature
    llms = [local_llm(settings, name, **update) for name in names]
    try:
        prompts = select_prompts(characters, settings.character.system_prompt, CHARACTER_PROMPTS)
    except ValueError as exc:
        fail(str(exc))
    total = len(llms) * len(prompts) * questions
    with Progress(
        TextColumn("{task.description:<60.60}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("loading", total=total)

        def advance(step: str) -> None:
            bar.update(task, advance=1, description=step)

        try:
            cells = asyncio.run(run_quality(llms, prompts, store, QUESTIONS[:questions], advance))
        except VoxgateError as exc:
            fail(str(exc))
    console.print(quality_table(cells))
    path = output or Path("bench/results") / f"quality-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    try:
        write_json(
            cells, path, {"temperature": llms[0].temperature, "seed": 0, "threads": llms[0].threads}
        )
    except OSError as exc:
        fail(f"cannot write the results: {exc}")
    console.print(f"json: {path}")
