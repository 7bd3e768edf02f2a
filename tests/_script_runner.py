"""Run `scripts/*.py` in fresh processes without paying for torch's imports each time.

A test that runs a script wants a process of its own: its own exit code, stdout and stderr, nothing shared with
pytest's interpreter. Most of such a process's time was the interpreter importing torch, transformers and datasets:
~7 s of a 7.3-s `transcribe.py` run on 2 AVX2 cores, for ~100 script runs per suite. So each pytest worker keeps
one server process (this file run as a script) that has imported them once, and each script runs in a child
forked from it: a new process (own pid, file descriptors and exit status) that starts with those modules loaded,
then runs the script as `__main__` as `python scripts/X.py ARGS` would, and exits as the interpreter does.

Modules read some environment variables when they are imported (Hugging Face cache paths, OpenMP threads), so a
run whose environment differs from the server's, other than in variables read only at run time (`RUN_TIME_VARIABLES`),
goes through a plain `subprocess.run` instead. `SPEECH_PIPELINE_TEST_FORK=0` sends every run there.
"""

from __future__ import annotations

import atexit
import builtins
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

PRELOAD = (
    "torch",
    "transformers.modeling_utils",
    "datasets",
    "accelerate",
    "pipeline.cli",
    "pipeline.training.loop",
    "pipeline.evaluation.evaluate",
    "pipeline.evaluation.inference",
    "torch.utils.tensorboard",  # the training loop's log
    "matplotlib.pyplot",  # its curves and the reports' plots (after matplotlib.use("Agg"), as they do)
)

# read when used, not when imported: a child may set them differently from its server
RUN_TIME_VARIABLES = frozenset({"SPEECH_PIPELINE_CACHE"})


# ---- the server (this file run as a script) ---------------------------------------------------------------------

def _child(request: dict) -> None:
    """In the forked child: fds 0-2 as a captured subprocess has them, then `python ARGV` (a script or `-c CODE`)
    as __main__; never returns."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    code = 0
    try:
        if argv[0] == "-c":
            sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
        else:
            sys.argv, sys.path[0] = list(argv), str(Path(argv[0]).parent)  # the script's folder first, as python does
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:  # as the interpreter reads it
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's exit: join threads, atexit, flush
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _serve() -> None:
    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing the server imports may write into the replies
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


# ---- the client (imported by conftest) --------------------------------------------------------------------------

class _Server:
    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=cwd, env=self.env, bufsize=0)
        self.pending = b""

    def reply(self, deadline: float | None) -> dict | None:
        """The server's next line, or None at the deadline."""
        assert self.proc.stdout is not None
        while b"\n" not in self.pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.proc.stdout], [], [], wait)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the script server exited")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, request: dict, timeout: float) -> int | None:
        """The script's exit status (negative: the signal that ended it), or None if it outlived `timeout`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        pid = self.reply(None)["pid"]  # type: ignore[index]
        done = self.reply(time.monotonic() + timeout)
        if done is None:
            os.kill(pid, signal.SIGKILL)
            self.reply(None)
            return None
        return done["returncode"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait()


_server: _Server | None = None


def start(env: Mapping[str, str], cwd: Path) -> None:
    """Start this process's server with the environment most runs have (it imports in the background meanwhile)."""
    global _server
    if os.environ.get("SPEECH_PIPELINE_TEST_FORK", "1") != "0" and hasattr(os, "fork"):
        _server = _Server(env, cwd)


def stop() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None


def run(argv: list[str], cwd: Path, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([python, *argv], capture_output=True, text=True)`, in a forked child where it can.
    `argv`: a script and its arguments, or `-c CODE ARGS`."""
    command = [sys.executable, *map(str, argv)]
    if _server is None or _server.proc.poll() is not None or not _same(env, _server.env):
        return subprocess.run(command, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout,
                              check=False)
    with tempfile.TemporaryDirectory(prefix="script-") as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        code = _server.run({"argv": command[1:], "cwd": str(cwd), "env": dict(env), "stdout": out, "stderr": err},
                           timeout)
        stdout, stderr = (Path(p).read_text(encoding="utf-8", errors="replace") if os.path.exists(p) else ""
                          for p in (out, err))
    if code is None:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(command, code, stdout, stderr)


def _same(env: Mapping[str, str], server_env: Mapping[str, str]) -> bool:
    """Whether a child of the server can run with `env`: it differs at most in variables read at run time."""
    return ({k: v for k, v in env.items() if k not in RUN_TIME_VARIABLES}
            == {k: v for k, v in server_env.items() if k not in RUN_TIME_VARIABLES})


if __name__ == "__main__":
    _serve()
