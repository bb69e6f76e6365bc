"""The configuration model and its store."""

from cmegw.config.model import (
    AuthDirective,
    Config,
    ConfigError,
    ConsoleConfig,
    HttpConfig,
    Identity,
    LineConfig,
    NetworkConfig,
    TunnelConfig,
    User,
    directive_for,
)
from cmegw.config.settings import apply_setting, apply_settings, get_setting, needs_restart, setting_names
from cmegw.config.store import ConfigFileError, ConfigStore, factory_defaults

__all__ = [
    "AuthDirective", "Config", "ConfigError", "ConfigFileError", "ConfigStore", "ConsoleConfig",
    "HttpConfig", "Identity", "LineConfig", "NetworkConfig", "TunnelConfig", "User", "apply_setting",
    "apply_settings", "directive_for", "factory_defaults", "get_setting", "needs_restart", "setting_names",
]
