"""``stackgan2 serve``: an HTTP API and a web page over a trained model (FastAPI + uvicorn, the ``serve`` extra)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from stackgan2.cli.common import console, handle_errors
from stackgan2.cli.sample import DeviceOpt, Model, Opt, _load

# stackgan2.serving's DEFAULT_MAX_BATCH and DEFAULT_GATHER_MS, repeated so that --help needs no torch
MAX_BATCH, GATHER_MS = 16, 5.0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or one clear error line."""
    from stackgan2.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --host or --port") from None
    sock.listen(2048)  # clients that connect while the model loads wait in the backlog (uvicorn's default size)
    return sock


def model_name(model: Path | None) -> tuple[str, bool]:
    """What ``GET /v1/model`` calls the model: its directory's name (a checkpoint: its run's), never a path."""
    if model is None:
        return "toy-birds", True
    resolved = model.resolve()
    return (resolved.parent.parent.name if resolved.is_file() else resolved.name), False


@handle_errors
def serve(
    model: Model = None,
    host: Annotated[str, Opt("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, Opt("--port", min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    device: DeviceOpt = "auto",
    max_batch: Annotated[
        int, Opt("--max-batch", min=1, max=256, help="Most images in one pass of the worker, over the requests gathered into it (one generator forward per image on the CPU, one per pass elsewhere).")
    ] = MAX_BATCH,
    gather_ms: Annotated[
        float, Opt("--gather-ms", min=0, help="How long an idle server waits for more requests to stack with a new one.")
    ] = GATHER_MS,
) -> None:
    """Serve the model over HTTP: a web page at /, the JSON/PNG API at /v1/images, OpenAPI docs at /docs."""
    from stackgan2.errors import UsageError

    try:
        import uvicorn

        from stackgan2.cli.serve_app import create_app
    except ImportError as exc:
        raise UsageError(f'stackgan2 serve needs the serve extra ({exc.name} is missing): pip install "stackgan2[serve]"') from None
    from stackgan2.serving import BatchingGenerator, model_info

    sock = bind(host, port)
    try:
        pipe = _load(model, device)
        pipe.require_text_encoder()  # the API takes prompts: an imported char-CNN-RNN model is refused in one line
        name, shipped = model_name(model)
        batcher = BatchingGenerator(pipe, max_batch, gather_ms)
        app = create_app(batcher, model_info(pipe, name, shipped, max_batch))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
        shown = f"[{host}]" if ":" in host else host
        console.print(
            f"serving {name} ({pipe.device}) at http://{shown}:{sock.getsockname()[1]}/  "
            "(API /v1/images, /v1/model, /healthz; docs /docs; Ctrl-C stops)",
            highlight=False,
            soft_wrap=True,
        )
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then re-raises it: a normal stop
            pass
        batcher.close()
        console.print("stopped", highlight=False)
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
