"""`pegasus studio`: blends and winged horses of one run, drawn live in a web page.

`serve` checks everything (the extra installed, the run, the output folder, the address) before
it loads the network, then serves until Ctrl-C or SIGTERM: a draw still running stops at its
next network evaluation, and the worker thread ends before `serve` returns.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pegasus.errors import UserError

EXTRA = "pip install 'pegasus-score[studio]'  (or: uv sync --extra studio)"


def check_installed() -> None:
    """The studio's extra is installed; else one line saying how to add it."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(f"the studio needs its extra: {EXTRA}") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), so that a taken port or a bad host is one clear line
    before any slow work (port 0: any free port)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another port "
                        "or host") from None
    sock.listen(64)
    return sock


def serve(run: Path, *, out: Path, host: str = "127.0.0.1", port: int = 7860,
          device: str = "auto", ready: Callable[[str], None] = print) -> None:
    """Serve the studio for `run`, favourites written to `out`; `ready` hears the page's
    address once it can be opened."""
    check_installed()
    import uvicorn

    from pegasus.api import load_run
    from pegasus.atomic import check_writable
    from pegasus.studio.app import make_app
    from pegasus.studio.session import Studio

    run, out = Path(run), Path(out)
    check_writable(out / "favourite-001.png")
    if not (run / "config.toml").is_file():
        raise UserError(f"{run} is not a run folder (no config.toml); give one that "
                        "`pegasus train` wrote")
    out.mkdir(parents=True, exist_ok=True)
    sock = listen(host, port)
    model = load_run(run, device=device)
    studio = Studio(model, run.resolve(), out.resolve(), str(model.device))
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pegasus-studio")

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            studio.close()  # the draw running stops now, not when it would have ended
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn's own raises the signal again once it has shut down, so that Ctrl-C
            # ended the process with a KeyboardInterrupt's traceback; a studio that shut
            # down cleanly returns instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            kept = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in kept.items():
                    signal.signal(s, handler)

    config = uvicorn.Config(make_app(studio, worker), log_level="warning", lifespan="off")
    server = Server(config)
    name = sock.getsockname()
    shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    ready(f"http://{shown}:{name[1]}/")
    try:
        server.run(sockets=[sock])
    finally:
        studio.close()
        worker.shutdown(wait=True, cancel_futures=True)
        sock.close()
