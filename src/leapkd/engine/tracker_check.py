"""What each experiment tracker needs, checked before a run writes anything.

A tracker that cannot work (its package missing, no W&B login, its server out of reach) is
refused in seconds with an `error:` and a `fix:`, instead of a traceback after the run
directory was created or a wait of minutes for a network that is not there.
"""

from __future__ import annotations

import configparser
import importlib.util
import netrc
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from leapkd.errors import LeapkdError

# tracker -> (modules it imports, install command)
PACKAGES = {
    "tensorboard": (("tensorboard",), "pip install 'leapkd[tensorboard]'"),
    "wandb": (("wandb",), "pip install 'leapkd[wandb]'"),
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "pip install 'leapkd[mlflow]'"),
}
WANDB_CLOUD = "https://api.wandb.ai"
NETWORK_TIMEOUT_S = 5.0
OFFLINE_FIX = "log offline: set WANDB_MODE=offline, then upload with `wandb sync <run>/wandb/offline-run-*` later"


def check_trackers(names: Sequence[str], mlflow_uri: str | None = None) -> None:
    """A LeapkdError when a tracker cannot work here: its package, W&B's login and server,
    a remote MLflow server (`mlflow_uri`)."""
    for name in names:
        modules, install = PACKAGES.get(name, ((), ""))
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise LeapkdError(f"`logger` {name} needs the package(s) {', '.join(missing)}", install)
    if "wandb" in names:
        check_wandb()
    if "mlflow" in names and mlflow_uri and urlsplit(mlflow_uri).scheme in ("http", "https"):
        problem = unreachable(mlflow_uri)
        if problem:
            raise LeapkdError(
                f"`logger` mlflow cannot reach the tracking server {mlflow_uri} ({problem})",
                "start the server or check `mlflow_tracking_uri`; without a server, leave it unset "
                "(a local SQLite store beside the runs) and copy the runs over later",
            )


def check_wandb() -> None:
    """Online W&B needs a key (WANDB_API_KEY or `wandb login`'s netrc entry) and its server."""
    mode = os.environ.get("WANDB_MODE", "online").lower()
    if mode in ("offline", "dryrun", "disabled") or os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true"):
        return
    server = wandb_server()
    host = urlsplit(server).hostname or server
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(host):
        raise LeapkdError(
            f"`logger` wandb needs a W&B login: WANDB_API_KEY is not set and no key for {host} is stored",
            f"run `wandb login` (or set WANDB_API_KEY), or {OFFLINE_FIX}",
        )
    problem = unreachable(server)
    if problem:
        raise LeapkdError(f"`logger` wandb cannot reach {server} ({problem})", OFFLINE_FIX)


def wandb_server() -> str:
    """The W&B server: WANDB_BASE_URL, else `wandb login --host`'s setting, else the W&B cloud."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    folder = os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb"
    settings = configparser.ConfigParser()
    settings.read(Path(folder) / "settings")
    return settings.get("default", "base_url", fallback=WANDB_CLOUD)


def _netrc_has(host: str) -> bool:
    path = os.environ.get("NETRC") or Path.home() / (".netrc" if os.name != "nt" else "_netrc")
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def unreachable(url: str, timeout: float = NETWORK_TIMEOUT_S) -> str | None:
    """Why `url` cannot be reached (through the proxies the environment sets), or None when
    its server answers at all: an HTTP error status or a TLS handshake the local certificate
    store cannot verify (a self-signed or inspecting proxy) is an answer. The whole probe,
    name lookup included, gets `timeout` seconds."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except urllib.error.URLError as err:
            outcome.append(None if isinstance(err.reason, ssl.SSLError) else str(err.reason))
        except ssl.SSLError:
            outcome.append(None)
        except (OSError, ValueError) as err:
            outcome.append(str(err) or type(err).__name__)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"
