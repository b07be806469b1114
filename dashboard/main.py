"""Run the dashboard: open the store, build the app, serve it with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from dashboard.app import create_app
from dashboard.auth import Revocations, SessionSigner, load_or_make_key
from dashboard.config import DashboardConfig, split_listen
from dashboard.context import CliCommand, Dashboard
from dashboard.users import UserFile
from shared.errors import GalleryMissingError, InputError
from store import open_store
from store.config import GalleryConfig, StoreConfig

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def warn_insecure_cookies(cfg: DashboardConfig, host: str) -> None:
    if not cfg.secure_cookies and not is_loopback(host):
        log.warning("the dashboard listens on %s (off loopback) without dashboard.secure_cookies: session cookies "
                    "go out over plain HTTP too; serve it behind a TLS proxy and set dashboard.secure_cookies: "
                    "true", cfg.listen)


def run_dashboard(cfg: DashboardConfig, store_cfg: StoreConfig, gallery: GalleryConfig, users_file: Path,
                  session_key_file: Path, cameras: list[str], cli: CliCommand, revoked_file: Path) -> int:
    host, port = split_listen(cfg.listen)
    warn_insecure_cookies(cfg, host)
    try:
        store = open_store(store_cfg, gallery)
    except GalleryMissingError as exc:
        raise InputError(f"{exc}: enrol someone first (`argusnet enroll`) or start `argusnet up`") from exc
    try:
        users = UserFile(users_file)
        if not users.users():
            log.warning("no dashboard user in %s: add one with `argusnet dashboard user add NAME --role admin "
                        "--password-file FILE` (nobody can log in until then)", users_file)
        signer = SessionSigner(load_or_make_key(session_key_file), cfg.session_h * 3600.0)
        revocations = Revocations(revoked_file, signer.lifetime_s)
        dash = Dashboard(store, users, signer, cfg, cameras, store.audit, cli, CollectorRegistry(), revocations)
        app = create_app(dash)
        print(f"dashboard on http://{host if ':' not in host else f'[{host}]'}:{port}/ (store {store.describe()})",
              flush=True)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=3, proxy_headers=bool(cfg.trusted_proxies),
                                               forwarded_allow_ips=",".join(cfg.trusted_proxies) or None))
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn stopped gracefully on SIGINT, then re-raised it
            pass
    finally:
        store.close()
    return 0
