"""The revocation list kept in the index, with a short in-process cache (SPEC §3).

Every worker and node reads the same index, so a revocation is seen everywhere once
the cached answer ages out: ``staleness`` (0.5 s) is the bound the spec allows
twice over. ``litevna.auth.redis`` keeps the same list in Redis for deployments that
want it pushed.
"""

from zope.interface import implementer

from litevna.interfaces import IRevocationList

#: How long an answer from the index is trusted.
STALENESS = 0.5


def key_id(api_key_id):
    """The revocation identifier of an API key."""
    return "key:" + api_key_id


def token_id(jti):
    """The revocation identifier of a derived token."""
    return "tok:" + jti


@implementer(IRevocationList)
class IndexRevocations:
    """IRevocationList over the index; answers cached for ``staleness`` seconds."""

    def __init__(self, index, clock, staleness=STALENESS, cache_size=100_000):
        self._index = index
        self._clock = clock
        self.staleness = staleness
        self._answers = {}
        self._cache_size = cache_size

    def revoke(self, identifier, store_id, expires_at):
        self._index.add_revocation(identifier, store_id, expires_at, self._clock())
        self._answers.pop(identifier, None)

    def is_revoked(self, identifier):
        now = self._clock()
        cached = self._answers.get(identifier)
        if cached is not None and cached[0] > now:
            return cached[1]
        revoked = self._index.revoked(identifier)
        if len(self._answers) >= self._cache_size:
            self._answers.clear()
        self._answers[identifier] = (now + self.staleness, revoked)
        return revoked

    def forget(self, identifier=None):
        """Drop cached answers (one, or all): the next check asks the index."""
        if identifier is None:
            self._answers.clear()
        else:
            self._answers.pop(identifier, None)
