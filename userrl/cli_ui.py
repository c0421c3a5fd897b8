"""``userrl ui``: serve the live web view of a deploy (read-only unless ``user.seat``; see ``userrl/ui``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from userrl.config import load_config
from userrl.logs import configure_logging
from userrl.runtime import make_bus, redis_url


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from userrl.ui import UISettings, create_app

    cfg = load_config(args.config, args.set)
    settings = UISettings(
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get("USERRL_UI_TOKEN", ""),
        run_dir=cfg.run_dir,
        gyms=tuple(cfg.gyms),
        seat=cfg.user.seat,
        seat_timeout_s=cfg.user.seat_timeout_s,
    )
    configure_logging(cfg.log_level)
    url = redis_url(cfg)  # fails here, with the fix, when the deploy's Redis is not up
    app = create_app(settings, lambda: make_bus(cfg, url, client_name="userrl:ui"))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"userrl ui: http://{host}:{settings.port}/" + ("?token=..." if settings.token else ""), flush=True)
    try:
        uvicorn.run(
            app, host=settings.host, port=settings.port, log_level="warning", ws="none", timeout_graceful_shutdown=2
        )
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on
        pass
    return 0


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    u = sub.add_parser("ui", help="a live web view: episodes, workers and lag, learning curves (read-only)")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs --token)")
    u.add_argument("--port", type=int, default=8321)
    u.add_argument("--token", default="", help="require this token on every request (default: $USERRL_UI_TOKEN)")
    add_config_args(u)
    u.set_defaults(func=cmd_ui)
