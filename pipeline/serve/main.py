"""Starting the server: the token rule, the index, the socket, uvicorn."""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.serve.app import LOOPBACK, TOKEN_ENV

log = logging.getLogger("musiclime.serve")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The token from ``--token-file`` or the environment (never the command line)."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def serve(out: str, host: str = "127.0.0.1", port: int = 8765, token_file: str | None = None,
          allow_hosts: list[str] | None = None, index_cache: str | None = None) -> int:
    import uvicorn

    from pipeline.serve.app import make_app
    from pipeline.serve.search import open_index
    try:
        token = read_token(token_file)
    except (OSError, ValueError) as e:
        print(f"musiclime serve: cannot read the token: {e}", file=sys.stderr)
        return 2
    if not is_loopback(host) and not token:
        print(f"musiclime serve: --host {host} is not loopback: set {TOKEN_ENV} or --token-file "
              "(clients then send the token as a header or sign in)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        ix = open_index(out, Path(index_cache) if index_cache else None)
    except (FileNotFoundError, ValueError) as e:
        print(f"musiclime serve: {e}", file=sys.stderr)
        return 2
    allowed = set(LOOPBACK) | {host.lower()} | {h.lower() for h in allow_hosts or []}
    if host in ("0.0.0.0", "::"):
        allowed |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"serving {out} on http://{shown}:{bound}/ ({ix.n} rows of {len(ix.track_ids)} tracks, "
          f"{len(ix.runs)} nights; ready in {time.perf_counter() - t0:.1f} s)", flush=True)
    config = uvicorn.Config(make_app(ix, allowed, token), log_level="warning", access_log=False,
                            server_header=False, proxy_headers=False, timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
