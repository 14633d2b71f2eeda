"""The chat layout moved to `yochameleon.model.chat` (a fact of each backbone family, issue 26 item 1).

These names stay importable from here, where tests, the toy world and older code import them.
"""

from yochameleon.model.chat import ChameleonLayout, ChatLayout, JanusLayout, chat_layout  # noqa: F401
