"""The dashboard's settings (`dashboard:` in the configuration)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from shared.schema import Section


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as host and port; ValueError naming what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {value!r}")
    return (host[1:-1] if host.startswith("[") and host.endswith("]") else host), int(port)


class DashboardConfig(Section):
    listen: str = Field(default="127.0.0.1:8080", description="HOST:PORT the dashboard serves on (0.0.0.0:8080 "
                        "for every interface; put TLS in front of it off a closed network).")
    users_file: Path | None = Field(default=None, description="The dashboard's users (argon2 hashes), written by "
                                    "`argusnet dashboard user add`; default: dashboard-users.json in a local "
                                    "store's directory, or in the user data directory with the Redis store.")
    session_key_file: Path | None = Field(default=None, description="Secret key that signs session cookies (32+ "
                                          "bytes); default: dashboard-session.key beside the users file, made on "
                                          "first start.")
    session_h: float = Field(default=12.0, gt=0.0, le=24.0 * 30, description="A login lasts this long.")
    revoked_file: Path | None = Field(default=None, description="Where logouts are kept (per user, the time of "
                                      "the last logout: older sessions are void), so a restart does not revive a "
                                      "logged-out cookie; default: dashboard-revoked.json beside the users file. "
                                      "Must be writable; when it is not, logouts hold until a restart (warned).")
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure (only sent over HTTPS): set it "
                                 "when a TLS proxy is in front (a warning is logged when the dashboard listens "
                                 "off loopback without it).")
    trusted_proxies: list[str] = Field(default_factory=list, max_length=16, description="Addresses of the reverse "
                                       "proxies in front (TLS) whose X-Forwarded-For header names the client; "
                                       "from any other peer the header is ignored, so nobody can pose as a new "
                                       "address to the login throttle. Empty (default): the TCP peer is the client.")
    poll_s: float = Field(default=0.2, gt=0.0, le=10.0, description="How often the event log is read for new "
                          "events pushed to browsers.")
    max_clients: int = Field(default=100, ge=1, le=10000, description="Live-update connections served at once.")
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024,
                                  description="Largest total size of the photos of one enrolment. A logged-in "
                                  "user's request body may be this plus 64 KiB of form; a larger one is refused "
                                  "(413) before it is read. A request without a session may send no body at all, "
                                  "except the login form (4 KiB).")
    max_login_checks: int = Field(default=2, ge=1, le=64, description="Password checks (argon2, 64 MiB each) run "
                                  "at once; further logins wait in a short queue, beyond it they get 503.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value
