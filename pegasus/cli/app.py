"""The Typer app, its consoles, and what every verb shares: one-line errors, progress bars,
the common options. Heavy modules (torch, the networks) are imported inside the commands so
that `pegasus --help` stays fast."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from pegasus.errors import FieldError, PegasusWarning, UserError
from pegasus.version import __version__

try:  # recent typer releases vendor click; older ones depend on click itself
    from typer._click.exceptions import ClickException
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover
    from click import get_current_context
    from click.exceptions import ClickException

# Under torchrun every rank runs the verb; rank 0 alone speaks (bars, results, errors, which
# distributed.first_error and distributed.agree bring to it from the other ranks). RANK is read
# here, not through pegasus.distributed, which would import torch before `pegasus --help`.
_RANK = os.environ.get("RANK", "0")
_QUIET = _RANK != "0"
console = Console(quiet=_QUIET)
err_console = Console(stderr=True, quiet=_QUIET)


def error_line(message: str, shared: bool = False) -> None:
    """One error line on stderr. Rank 0 says its errors and those every rank raised alike
    (`shared`: distributed.agree's and first_error's); another rank says its own errors, its
    rank first, since no other rank may know of them (a bad option given to it alone)."""
    from rich.markup import escape

    # Escaped: a message may quote what the user wrote, such as "heun[churn=10]".
    if not _QUIET:
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                          soft_wrap=True, markup=True)
    elif not shared:
        Console(stderr=True).print(f"[bold red]error:[/] rank {_RANK}: {escape(message)}",
                                   highlight=False, soft_wrap=True, markup=True)


class OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, an unknown option) as one line on stderr and exit
    code 2, like the library's own errors, instead of click's framed usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            error_line(e.format_message().replace("[", r"\[") + hint)
            sys.exit(e.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _version(value: bool) -> None:
    if value:
        console.print(f"pegasus {__version__}", highlight=False)
        raise typer.Exit()


app = typer.Typer(
    name="pegasus",
    cls=OneLineErrors,
    help="Train noise-conditional score networks (NCSNv2) and blend two classes into new things.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train noise-conditional score networks (NCSNv2) and blend two classes into new things."""


def examples(*lines: str) -> str:
    """An `Examples:` block for a verb's --help, one command per line."""
    return "[bold]Examples:[/]\n\n" + "\n\n".join(f"  [cyan]{line}[/]" for line in lines)


@contextlib.contextmanager
def user_errors(flags: dict[str, str] | None = None):
    """Turn input errors into one line on stderr and exit code 2. A FieldError names a field;
    when this verb sets that field with a flag, the line names the flag."""
    try:
        yield
    except FieldError as e:
        error_line(f"{(flags or {}).get(e.field, e.field)} {e.problem}", e.shared)
        raise typer.Exit(2) from None
    except UserError as e:
        error_line(str(e), e.shared)
        raise typer.Exit(2) from None


def stated(**options) -> dict:
    """The options the user gave (those not None): a request object's defaults fill the rest,
    so that each default is written once, in the request (tasks/*.py)."""
    return {name: value for name, value in options.items() if value is not None}


def with_sigmas(sampler: str | None, sigmas: str | None) -> str | None:
    """--sampler with --sigmas folded in as the consistency sampler's own option."""
    if sigmas is None:
        return sampler
    from pegasus.errors import UserError

    if sampler is not None and sampler.partition("[")[0].strip() != "consistency":
        raise UserError(f"--sigmas are the consistency sampler's; {sampler} walks its own grid "
                        f"(give --sampler consistency, or leave --sampler out)")
    try:
        values = [float(v) for v in sigmas.split(",")]
    except ValueError:
        raise UserError(f"--sigmas {sigmas!r}: give numbers separated by commas, e.g. "
                        f"0.5,0.15") from None
    return f"consistency[sigmas=[{', '.join(map(repr, values))}]]"


def given() -> dict:
    """The running verb's options as parsed: the request every rank of a torchrun job must
    agree on (distributed.agree)."""
    return dict(get_current_context().params)


def note(message: str) -> None:
    """A line of what the work is doing (a compile, say), on stderr beside the progress bars."""
    from rich.text import Text

    err_console.print(Text(message, style="dim"), soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def show_library_warnings() -> None:
    """Print pegasus's own Python warnings (PegasusWarning) as the CLI's one-line warnings; any
    other warning (torch's, say) keeps Python's usual form, file and line included."""
    import warnings

    usual = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PegasusWarning):
            warn(str(message))
        else:
            usual(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    )


class StepsBar:
    """A progress bar over training steps (or images scored) that appears at the work's first
    report: an error found during start-up (a bad resolution, a missing checkpoint) comes alone,
    without an empty bar above it. `report` is a training ProgressFn: (step, total, loss or
    None)."""

    def __init__(self, description: str, loss_format: str) -> None:
        self.progress, self.description, self.loss_format = progress_bar(), description, loss_format
        self.task = None

    def report(self, step: int, total: int, loss: float | None) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=total, info="")
        info = {} if loss is None else {"info": f"loss {loss:{self.loss_format}}"}
        self.progress.update(self.task, completed=step, **info)

    def images(self, done: int, total: int) -> None:
        """Images written so far of all: a sampling job's Progress (run/job.py)."""
        self.report(done, total, None)

    def __enter__(self) -> StepsBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.task is not None:  # stopping a bar never started prints an empty line
            self.progress.stop()


def sampling_progress(progress, description: str, total: int):
    """A sampler callback that advances a progress bar; it never reads the device."""
    task = progress.add_task(description, total=total, info="")
    return lambda info: progress.advance(task)


class EvaluationBars:
    """Progress bars for the library's sampling work (a signatures.ProgressBar): each piece of
    work it announces (a sampling job, each of a blend's runs) gets a bar over its network
    evaluations. Nothing shows before the first announcement, so an error found while checking
    the input comes alone."""

    def __init__(self) -> None:
        self.progress, self.started = progress_bar(), False

    def __call__(self, description: str, total: int):
        if not self.started:
            self.progress.start()
            self.started = True
        return sampling_progress(self.progress, description, total)

    def __enter__(self) -> EvaluationBars:
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.progress.stop()


def load_model(run: Path | None = None, checkpoint: Path | None = None,
               weights: Path | None = None, device: str = "auto"):
    """The pegasus.api.Model that --run, --checkpoint and --weights name."""
    from pegasus.api import load_run
    from pegasus.errors import RunError

    if weights is not None and (run is not None or checkpoint is not None):
        raise RunError("give a weights file or a run (or checkpoint), not both")
    if weights is None and run is None and checkpoint is None:
        raise RunError("give a run folder (--run), a checkpoint or a weights file")
    return load_run(run, checkpoint, weights=weights, device=device, warn=warn, notify=note)
