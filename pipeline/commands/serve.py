"""``musiclime serve``: find and hear any track's explanation in an output (read-only)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output of `musiclime explain` (a folder or s3:// URI; Parquet or Delta)")
    p.add_argument("--port", type=int, default=8765, help="0: any free port (the address is printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; any but loopback requires a token (MUSICLIME_SERVE_TOKEN or --token-file)")
    p.add_argument("--token-file", default=None,
                   help="file holding the token clients must send (header or the sign-in form's cookie)")
    p.add_argument("--allow-host", action="append", default=[],
                   help="a name clients may reach the server by (the Host header check), e.g. its DNS name")
    p.add_argument("--index-cache", default=None,
                   help="folder of the search index (default $MUSICLIME_HOME/serve-index; never the output)")


def run(args: argparse.Namespace) -> int:
    from pipeline.serve.main import serve
    return serve(args.out, host=args.host, port=args.port, token_file=args.token_file,
                 allow_hosts=args.allow_host, index_cache=args.index_cache)
