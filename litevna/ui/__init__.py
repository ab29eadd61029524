"""The web UI and the JSON account API it uses (SPEC §2)."""


def add_routes(cls):
    """Add the account, store and key routes and the pages to the Application class."""
    return cls
