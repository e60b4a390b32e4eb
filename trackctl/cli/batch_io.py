"""What `assign --batch` and `track --batch` do with their input and answers: open the input, write
each line's outcome (the answer on stdout, a rejection as `line N: reason` on stderr), and the
batch assignment itself from input to answers. No typer here: the lean `trackctl assign --batch`
(trackctl/entry.py) runs it as the typer command does."""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Optional

from ..console import StdoutClosed, warn
from ..errors import InputRejected, UsageError


def open_input(input_file: Optional[Path]) -> BinaryIO:
    """Return the batch's input: --input FILE, else stdin (refused when it is a terminal)."""
    if input_file is None and sys.stdin is None:  # `<&-`: no file descriptor 0 at all
        raise UsageError("--batch reads lines from stdin, which is closed", hint="pipe the lines in, or use --input FILE")
    if input_file is None and sys.stdin.isatty():
        raise UsageError("--batch reads lines from stdin, which is a terminal",
                         hint="pipe the lines in, or use --input FILE")
    try:
        return open(input_file, "rb") if input_file else sys.stdin.buffer
    except OSError as exc:
        raise UsageError(f"cannot read {input_file}: {exc.strerror}") from exc


class Answers:
    """Answer lines for stdout, joined into one write per `hold` lines (1: each at once)."""

    def __init__(self, hold: int = 1) -> None:
        self.hold = hold
        self.held: list[str] = []

    def emit(self) -> None:
        """Write what is held (every `hold` lines, at a pause in the input, at the end)."""
        if self.held:
            text = "".join(self.held)
            self.held.clear()
            write_whole_lines(text)


PIECE = 4096  # PIPE_BUF on Linux: a write of at most this much to a pipe that polls writable is whole


def write_whole_lines(text: str) -> None:
    """Write `text` (whole lines) to stdout so that an interrupt never leaves half a line.

    An interrupt (Ctrl-C) must neither cut a line nor lose count of what was written, so the text
    goes to the file descriptor in pieces that end at a line end and fit in PIPE_BUF: the wait
    for room (poll) is where Ctrl-C lands, with nothing of the piece written yet; the write of a
    piece cannot block then, and a signal arriving during it is held until the piece is out
    (Python raises a signal's exception after a call returns, which would lose the count of what
    the call wrote). A reader sees whole answers, each committed, never `42,correios` without its code.
    """
    out = sys.stdout
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a caller's StringIO)
        out.write(text)
        return
    out.flush()  # anything written through sys.stdout before comes first
    data = text.encode(getattr(out, "encoding", None) or "utf-8", getattr(out, "errors", None) or "strict")
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    done = 0
    try:
        while done < len(data):
            end = len(data) if len(data) - done <= PIECE else data.rfind(b"\n", done, done + PIECE) + 1
            if end <= done:  # a line longer than a piece: written whole, without the guarantee
                end = data.index(b"\n", done) + 1 if b"\n" in data[done:] else len(data)
            poller.poll()  # Ctrl-C here: raised with `done` at a line end
            with _signals_held() as held:
                while done < end:
                    done += os.write(fd, data[done:end])
            if held:
                raise KeyboardInterrupt
    except BrokenPipeError as exc:
        raise StdoutClosed() from exc


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C (SIGINT with Python's default handler) for the length of the block: yield a list
    that says, after it, whether one arrived (the caller then raises KeyboardInterrupt)."""
    import signal
    import threading

    arrived: list[int] = []
    held = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if held:
        signal.signal(signal.SIGINT, lambda number, frame: arrived.append(number))
    try:
        yield arrived
    finally:
        if held:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def write_outcomes(outcomes: Iterable[Any], line: Callable[[Any], str], bar: Callable[[int], None],
                   answers: Answers) -> tuple[int, int]:
    """Write every outcome (`line(outcome)`, its answer, on stdout through `answers`; its error
    on stderr); return (answered, rejected)."""
    answered = rejected = 0
    held, hold = answers.held, answers.hold
    # Interrupted (Ctrl-C, a failed chunk), the answers still held are committed but not printed
    # (a rerun finds them): what is printed stays a prefix of the input's answers.
    for outcome in outcomes:
        if outcome.error is not None:
            rejected += 1
            sys.stderr.write(f"line {outcome.line}: {outcome.error}\n")
        else:
            answered += 1
            held.append(line(outcome))
            if len(held) >= hold:
                answers.emit()
        if (answered + rejected) % 1000 == 0:  # the bar redraws ten times a second; per-line updates would only cost
            bar(1000)
    answers.emit()
    return answered, rejected


def conclude(answered: int, rejected: int, *, done: str, again: str) -> None:
    """Warn about an empty input; raise InputRejected (exit 3) when any line was rejected."""
    if answered == 0 and rejected == 0:
        warn("no input lines")
    if rejected:
        raise InputRejected(f"{rejected} of {answered + rejected} lines rejected (see above); the others {done}",
                            hint=f"fix those lines and rerun them: {again} is idempotent")


def _flushing(records: Iterator[tuple[int, dict]], emit: Callable[[], None]) -> Iterator[tuple[int, dict]]:
    """Pass the input records through, writing out the held answers and flushing stdout when the
    input pauses: by the time the batch asks for the record after an IDLE, it has handed over the
    answers of every line before it, so they reach the reader (a co-process, `tail -f | ... |
    consumer`) before the read that waits."""
    from ..batch_input import IDLE

    for record in records:
        yield record
        if record is IDLE:
            emit()
            sys.stdout.flush()


HOLD = 1000  # answer lines joined into one write to stdout


def _no_progress(advanced: int = 1, expected: Optional[int] = None) -> None:
    pass


def assign_answers(conn, stream: BinaryIO, input_format: str, fmt: str,
                   bar: Callable[..., None] = _no_progress) -> tuple[int, int, int]:
    """Assign every line of `stream` and write the answers; return (assigned, rejected, made inline)."""
    from ..assign_batch import CLI_CONNECTIONS, assign_lines
    from ..batch_input import parse_records
    from ..entry import assignment_line

    inline = 0
    answers = Answers(HOLD)

    def line(outcome) -> str:
        nonlocal inline
        a = outcome.assignment
        inline += a.generated_inline
        return assignment_line(fmt, a)

    records = _flushing(parse_records(stream, input_format, follow=True), answers.emit)
    outcomes = assign_lines(conn, records, overlap=True, connections=CLI_CONNECTIONS)
    assigned, rejected = write_outcomes(outcomes, line, bar, answers)
    return assigned, rejected, inline


def assign_concluded(assigned: int, rejected: int, inline: int) -> None:
    """After the batch: warn about codes made inline; exit 3 (InputRejected) if a line was rejected."""
    if inline:
        warn(f"pools ran dry: generated {inline} codes inline; run 'trackctl refill' or raise the targets")
    conclude(assigned, rejected, done="were assigned", again="assigning")
