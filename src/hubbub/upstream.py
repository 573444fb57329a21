"""Every name Hubbub uses that its upstream libraries do not document, in one place.

Everything else Hubbub imports from uvicorn, websockets, httptools and nats-py is
documented public API. What is here is not: each name is used only through this
module, and ``tests/test_upstream*.py`` checks each one against the installed version,
so an upgrade that removes or changes one fails there, loudly, with the name in the
message, instead of somewhere at run time.
"""

from __future__ import annotations

# --- uvicorn ------------------------------------------------------------------------

# --- nats-py ------------------------------------------------------------------------
