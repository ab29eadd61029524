"""Cross-origin resource sharing (Fetch standard §3.2) for viewers on other origins."""

ALLOW_METHODS = b"GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = (b"Authorization, Accept, Accept-Encoding, Content-Type, Content-Encoding, "
                 b"Range, If-None-Match, X-Requested-With")
EXPOSE_HEADERS = (b"Content-Location, Content-Range, Content-Length, ETag, Warning, "
                  b"WWW-Authenticate, Location")


class Cors:
    """Adds CORS headers for allowed origins and answers preflight requests."""

    def __init__(self, origins=("*",)):
        self._any = "*" in origins
        self._origins = {o.encode("latin-1") for o in origins}

    def headers(self, origin):
        """The response headers for a request from origin ([] if not allowed)."""
        if origin is None or not (self._any or origin in self._origins):
            return []
        if self._any:
            return [(b"Access-Control-Allow-Origin", b"*"),
                    (b"Access-Control-Expose-Headers", EXPOSE_HEADERS)]
        return [(b"Access-Control-Allow-Origin", origin), (b"Vary", b"Origin"),
                (b"Access-Control-Expose-Headers", EXPOSE_HEADERS)]

    def apply(self, request):
        """Set the headers on request; True if it was a preflight, now answered."""
        headers = self.headers(request.getHeader(b"origin"))
        for name, value in headers:
            request.setHeader(name, value)
        if request.method == b"OPTIONS" and request.getHeader(b"access-control-request-method"):
            if headers:
                request.setHeader(b"Access-Control-Allow-Methods", ALLOW_METHODS)
                request.setHeader(b"Access-Control-Allow-Headers", ALLOW_HEADERS)
                request.setHeader(b"Access-Control-Max-Age", b"86400")
            request.setResponseCode(204 if headers else 403)
            request.finish()
            return True
        return False
