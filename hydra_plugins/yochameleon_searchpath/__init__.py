"""Hydra SearchPathPlugin: the user's config directories ($YOCHAMELEON_CONFIG_PATH, ./conf) are searched
before yochameleon's shipped configs, so a user's `conf/concept/bo.yaml` wins (yochameleon.config)."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class YoChameleonUserConfigs(SearchPathPlugin):
    """Prepends the user's directories; applies only to compositions whose primary configs are yochameleon's."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from yochameleon.config import prepend_user_dirs

        prepend_user_dirs(search_path)
