# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs a child command line by line, with a deadline, and never leaves it (or its children) running."""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

# The main thread never blocks longer than this: a signal the kernel hands to another thread only runs
# its Python handler when the main thread next executes, and a quiet child must not delay that.
WAKE_SECONDS = 0.1


@dataclass
class Finished:
    returncode: int
    tail: str
    timed_out: bool
    seconds: float = 0.0


def run_streaming(command: list[str], cwd: str, env: dict[str, str], timeout: float,
                  on_line: Callable[[str], None] = lambda line: None, log_path: str | None = None,
                  tail_lines: int = 60) -> Finished:
    """Runs command in its own process group; on_line sees each output line (stdout and stderr).

    On timeout, or when the caller is interrupted, the whole process group is killed before this returns
    or raises, so workers the command started (pytest-xdist, Molecule's Ansible) go with it.
    """
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    log = open(log_path, "w", encoding="utf-8") if log_path else None  # pylint: disable=consider-using-with
    try:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
                                   start_new_session=True)
    except OSError as error:
        if log:
            log.close()
        return Finished(returncode=127, tail=f"could not start {command[0]}: {error}", timed_out=False)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_group(process)

    timer = threading.Timer(max(timeout, 0.1), expire)
    timer.start()
    try:
        for line in lines_of(process.stdout):
            tail.append(line)
            if log:
                log.write(line)
            on_line(line.rstrip("\n"))
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            _kill_group(process)
            process.wait()
        if log:
            log.close()
    return Finished(returncode=process.returncode, tail="".join(tail), timed_out=timed_out.is_set())


def lines_of(stream: IO[str] | None) -> Iterator[str]:
    """The stream's lines as they come. A helper thread reads them, so that the main thread never
    blocks in a read longer than WAKE_SECONDS and a signal's handler runs in time."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=WAKE_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


def _pump(stream: IO[str] | None, lines: queue.Queue) -> None:
    """Moves the child's output lines to the queue; None marks its end."""
    try:
        for line in stream or []:
            lines.put(line)
    except (OSError, ValueError):
        pass  # the stream was closed while the child was being killed
    finally:
        lines.put(None)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass  # already gone
