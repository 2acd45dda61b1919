"""Where the engine runs: on this computer, or on an engine server (its URL and token). No widgets here.

Plain settings (QgsSettings under /urbanform/) keep the mode, the server's URL
and the id of an authentication configuration; the token itself lives in
QGIS's authentication database, encrypted with the user's master password: a
configuration of method "Basic" whose password is the token. QGIS asks for the
master password when it needs it (once per session); the settings file never
holds the token.

``active_server()`` is what a run uses: None for this computer, else a
``remote.Server`` (read once, when the run starts).
"""
from __future__ import annotations

from qgis.core import QgsApplication, QgsAuthMethodConfig

from .. import settings
from .remote import Server

LOCAL, SERVER = "local", "server"
MODES = ((LOCAL, "This computer"), (SERVER, "Server"))
MODE_KEY, URL_KEY, AUTHCFG_KEY = "engine_mode", "server_url", "server_authcfg"
AUTH_METHOD = "Basic"               # a user name and a password: the password holds the token
AUTH_NAME = "Urban Form Mapper engine server"
AUTH_USER = "token"


def mode() -> str:
    """``local`` (this computer, the default) or ``server``."""
    value = settings.get(MODE_KEY, LOCAL, str)
    return value if value in (LOCAL, SERVER) else LOCAL


def set_mode(value: str) -> None:
    assert value in (LOCAL, SERVER), value
    settings.set(MODE_KEY, value)


def url() -> str:
    return settings.get(URL_KEY, "", str).strip()


def set_url(value: str) -> None:
    settings.set(URL_KEY, value.strip())


def authcfg() -> str:
    """The id of the authentication configuration that holds the token ('' when none was saved)."""
    return settings.get(AUTHCFG_KEY, "", str)


def has_token() -> bool:
    """A token was saved (its configuration still exists); reads no secret, so asks for no master password."""
    cfg = authcfg()
    return bool(cfg) and cfg in QgsApplication.authManager().configIds()


def save_token(token: str) -> str | None:
    """Store ``token`` in the authentication database (replacing the saved one); None, or why it could not be."""
    manager = QgsApplication.authManager()
    if manager.isDisabled():
        return f"QGIS's authentication database is not available ({manager.disabledMessage()}); the token was not " \
               "saved."
    config = QgsAuthMethodConfig(AUTH_METHOD)
    config.setName(AUTH_NAME)
    config.setUri(url())
    config.setConfig("username", AUTH_USER)
    config.setConfig("password", token)
    cfg = authcfg()
    if cfg and cfg in manager.configIds():
        config.setId(cfg)
        ok = manager.updateAuthenticationConfig(config)
    else:
        ok, config = manager.storeAuthenticationConfig(config)
    if not ok:
        return "The token was not saved: QGIS's authentication database needs its master password (Settings > " \
               "Options > Authentication)."
    settings.set(AUTHCFG_KEY, config.id())
    return None


def forget_token() -> None:
    """Remove the saved token from the authentication database."""
    cfg = authcfg()
    if cfg and cfg in QgsApplication.authManager().configIds():
        QgsApplication.authManager().removeAuthenticationConfig(cfg)
    settings.remove(AUTHCFG_KEY)


def token() -> str:
    """The saved token ('' when none is saved or the database cannot be opened; QGIS may ask for the master
    password)."""
    cfg = authcfg()
    if not cfg:
        return ""
    config = QgsAuthMethodConfig()
    manager = QgsApplication.authManager()
    loaded = manager.loadAuthenticationConfig(cfg, config, True)       # (ok, config) in PyQGIS
    ok, config = loaded if isinstance(loaded, tuple) else (loaded, config)
    return config.config("password", "") if ok else ""


def active_server() -> Server | None:
    """The server a run goes to (None: this computer), with its token."""
    if mode() != SERVER:
        return None
    return Server(url(), token())
