"""What `assign --batch` and `track --batch` do with their input and answers: open the input, write
each line's outcome (the answer on stdout, a rejection as `line N: reason` on stderr), and the
batch assignment itself from input to answers. No typer here: the lean `trackctl assign --batch`
(trackctl/entry.py) runs it as the typer command does."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Optional

from ..console import warn
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
    """Answer lines for stdout, joined into one write per `hold` lines (1: each at once, flushed)."""

    def __init__(self, hold: int = 1) -> None:
        self.hold = hold
        self.held: list[str] = []

    def emit(self) -> None:
        """Write what is held (a pause in the input, the end, an interruption)."""
        if self.held:
            text = "".join(self.held)
            self.held.clear()
            sys.stdout.write(text)
            if self.hold == 1:
                sys.stdout.flush()


def write_outcomes(outcomes: Iterable[Any], line: Callable[[Any], str], bar: Callable[[int], None],
                   answers: Answers) -> tuple[int, int]:
    """Write every outcome (`line(outcome)`, its answer, on stdout through `answers`; its error
    on stderr); return (answered, rejected). Interrupted, the answers held so far are written
    before the exception goes on: every outcome yielded is done (committed, for assign)."""
    answered = rejected = 0
    held, hold = answers.held, answers.hold
    try:
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
    except BaseException:
        # A reader that went away cannot take them, which the exception on its way says already.
        with contextlib.suppress(Exception):
            answers.emit()
        raise
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
    from ..entry import assignment_line, csv_field

    inline = 0
    answers = Answers(HOLD)

    def line(outcome) -> str:  # once per input line: kept to a few operations
        nonlocal inline
        a = outcome.assignment
        if a.generated_inline:
            inline += 1
        if fmt == "csv":
            order, code = a.order_id, a.code
            # (an order id holds no line feed, a carrier name none of the three: CHECK constraints)
            if "," in order or '"' in order or "," in code or '"' in code or "\n" in code:
                order, code = csv_field(order), csv_field(code)
            return f"{order},{a.carrier},{code}\n"
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
