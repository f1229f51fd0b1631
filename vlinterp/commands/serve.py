"""`vlinterp serve [--model M] [--port P] [--sae DIR ...]`: the explorer, a local web app.

Binds ``--host`` (127.0.0.1: this machine only) and ``--port`` first, so a port in use is one line
and exit 2 before the model loads; ``--port 0`` takes any free port. Then loads the model (and
each ``--sae``), prints the address and serves until Ctrl-C. See :mod:`vlinterp.serve`.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

from ..cli import register
from . import args as A
from ..core.errors import UsageError

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "hot", "magma")  # vlinterp.viz.overlay.COLORMAPS
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _port(text) -> int:
    v = A._int(text)
    if not 0 <= v <= 65535:
        raise UsageError(f"{text} is not a port number (0-65535; 0: any free port)")
    return v


def _sae_dir(text) -> str:
    A._dir(text)
    if not os.path.isfile(os.path.join(text, "cfg.json")):
        raise UsageError(f"{text!r} is not an SAE directory (no cfg.json; train one with `vlinterp sae train`)")
    return text


port = A._type(_port, "port")
sae_dir = A._type(_sae_dir, "SAE directory")


def _add(p: argparse.ArgumentParser):
    A.add_model(p, help="the vision-language model to explore: a zoo organism, tiny:<family> or a local model directory")
    A.add_load_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8765, help="port to listen on (0: any free port)")
    p.add_argument("--sae", type=sae_dir, action="append", metavar="DIR",
                   help="an SAE directory (vlinterp sae train) for the SAE tab; repeat for several sites")
    p.add_argument("--images", type=A.existing_dir, metavar="DIR", help="also offer the images in DIR to pick")
    p.add_argument("--max-upload", type=A.positive_float, default=20.0, metavar="MIB", help="largest image upload accepted, in MiB")
    p.add_argument("--max-new-tokens", type=A.positive_int, default=12, help="longest answer generated")
    p.add_argument("--alpha", type=A.ratio, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--colormap", default="jet", choices=COLORMAPS, help="OpenCV colormap of the overlays")


def bind(host: str, port_: int) -> socket.socket:
    """A listening socket on ``(host, port_)``; :class:`UsageError` in one line when it is taken."""
    from ..core.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port_, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: cannot resolve it ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE (Linux, macOS, Windows)
            raise UsageError(f"port {port_} on {host} is already in use; choose another with --port (0 picks a free one)") from None
        raise UsageError(f"cannot listen on {host}:{port_}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _examples(folder: str | None) -> list:
    from ..core.errors import ImageError
    from ..core.images import load_image
    from ..serve import shapes_examples

    out = shapes_examples(4)
    if folder:
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(IMAGE_SUFFIXES):
                try:
                    out.append((name, load_image(os.path.join(folder, name), name="image")))
                except ImageError as e:
                    print(f"vlinterp serve: warning: skipped {e}", file=sys.stderr)
    return out


def _run(args) -> int:
    import logging

    import vlinterp as vi

    from ..core.errors import UsageError

    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise UsageError(f"vlinterp serve needs starlette and uvicorn ({e.name} is missing): pip install 'vlinterp[serve]'") from None
    sock = bind(args.host, args.port)
    try:
        from ..serve import Workbench, create_app
        from ..serve.tabs import cleanup, load_saes

        logging.basicConfig(level=logging.WARNING, format="vlinterp serve: %(message)s")
        m = vi.load(args.model, **A.load_kwargs(args))
        bench = Workbench(m, args.model, load_saes(m, args.sae or []), _examples(args.images), args.max_new_tokens,
                          args.alpha, args.colormap)
        app = create_app(bench, max_upload=int(args.max_upload * 2**20))
        host, port_ = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        if host not in ("127.0.0.1", "::1", "localhost"):
            print(f"vlinterp serve: warning: listening on {host}: anyone who can reach this machine can use the model", file=sys.stderr)
        print(f"vlinterp serve: http://{shown}:{port_}/  ({args.model}; Ctrl-C to stop)", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
        try:
            server.run(sockets=[sock])
        finally:
            app.state.jobs.cancel_all()
            cleanup(bench)
    finally:
        sock.close()
    return 0


register("serve", "a local web app to explore a model: ask, then browse maps, attention, causal traces and SAE features", _add, _run)
