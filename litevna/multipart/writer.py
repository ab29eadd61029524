"""Writing multipart/related bodies: boundaries and part framing."""

import os


def new_boundary():
    """A boundary that cannot occur in practice inside the parts."""
    return "litevna-" + os.urandom(16).hex()


def part_head(boundary, content_type, extra_headers=(), first=False):
    """The delimiter and headers that open one part."""
    lines = [("" if first else "\r\n") + "--" + boundary, "Content-Type: " + content_type]
    lines.extend(f"{name}: {value}" for name, value in extra_headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary):
    """The closing delimiter."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")
