"""``userrl ui``: a read-only live web view of a deploy (episodes, system, learning curves).

Pages are served from this package (``static/``): plain HTML, CSS and a little JS, no build
step and nothing from a CDN. See ``app.py`` for the routes and ``security.py`` for the token.
"""

from userrl.ui.app import UISettings, create_app

__all__ = ["UISettings", "create_app"]
