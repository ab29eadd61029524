"""The web UI and the JSON account API it uses (SPEC §2)."""

from litevna.ui import api, pages


def add_routes(cls):
    """Add the account, store and key routes and the pages to the Application class."""
    pages.add_routes(cls)
    api.add_routes(cls)
    return cls
