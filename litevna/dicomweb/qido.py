"""QIDO-RS (PS3.18 §10.6): search studies, series and instances.

The query is parsed here (litevna.dicom.query), matched by the index
(litevna.index.search) in the CPU pool, and each hit becomes one DICOM JSON
object with the attributes of PS3.18 Table 10.6.3-3/4/5 for its level.
"""

from urllib.parse import parse_qsl

import orjson

from litevna.cache import or_build, shared
from litevna.cache.memory import MemoryCache
from litevna.dicom import query as q
from litevna.dicomweb.wado import DICOM_JSON, Body, check_uids
from litevna.http.compression import gzip_bytes
from litevna.http.errors import HTTPError

_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}


def query_params(raw_query):
    """The (name, value) pairs of a URL query, decoded as UTF-8 (400 if they are not)."""
    try:
        return parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True,
                         encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HTTPError(400, "the query string is not valid UTF-8") from None


class Qido:
    """The search service: a Query in, a DICOM JSON array out."""

    def __init__(self, index, cpu, cache=None):
        self._index = index
        self._cpu = cpu  # cpu(fn, *args) -> Deferred, run in the CPU thread pool
        self.cache = cache if cache is not None else MemoryCache()

    def search(self, store_id, level, params, base_url, gzip, study_uid=None, series_uid=None,
               scope=None):
        """A Body answering the search, or a Deferred one.

        Answers are cached under the store's generation, which every STOW and DELETE
        of the store changes (in any process sharing the index), so a cached answer
        is always the one a fresh search would give."""
        check_uids(study_uid, series_uid)
        try:
            query = q.parse_query(level, params, study_uid, series_uid)
        except q.QueryError as exc:
            raise HTTPError(400, str(exc)) from None
        key = (store_id, self._index.generation(store_id), level, study_uid, series_uid,
               tuple(p for p in params if p[0] != "_auth_token"), base_url, gzip, scope)
        cached = self.cache.get(key)
        if cached is not None:
            return _body(*cached)

        def keep(answer):
            self.cache.put(key, answer, len(answer[0]))
            return answer

        def search():
            return self._cpu(self._answer, store_id, query, base_url, gzip, scope).addCallback(keep)

        remote = shared(self.cache, key)
        d = search() if remote is None else or_build(remote, search)
        return d.addCallback(lambda answer: _body(*answer))

    def _answer(self, store_id, query, base_url, gzip, scope):
        """(document, Warning or None, gzipped?): the search run and its JSON written."""
        hits, total = self._index.search(store_id, query, scope=scope)
        document = orjson.dumps([response_object(query, hit, base_url) for hit in hits])
        more = total - query.offset - len(hits)
        warning = None
        if more > 0 and hits:
            # PS3.18 §8.3.4.4: say that the limit cut the results, and by how many.
            warning = (f'299 litevna "{more} more results match; ask again with '
                       f'offset={query.offset + len(hits)}"')
        return (gzip_bytes(document) if gzip else document), warning, gzip


def _body(document, warning, gzip):
    headers = {"Content-Type": DICOM_JSON, "Cache-Control": "private, no-cache",
               "Vary": "Accept-Encoding"}
    if warning:
        headers["Warning"] = warning
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return Body(headers=headers, pieces=document)


def response_object(query, hit, base_url):
    """One result: the level's attributes and its parents' where PS3.18 asks for them."""
    out = {}
    for level in q.LEVELS[:q.LEVELS.index(query.level) + 1]:
        out.update(q.select(hit[level], q.response_tags(query, level)))
    url = f"{base_url}/studies/{hit['study_uid']}"
    if query.level != "study":
        url += f"/series/{hit['series_uid']}"
    if query.level == "instance":
        url += f"/instances/{hit['sop_instance_uid']}"
    out[q.RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    out[q.INSTANCE_AVAILABILITY] = _ONLINE
    return dict(sorted(out.items()))
