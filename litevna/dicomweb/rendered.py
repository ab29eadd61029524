"""Rendered images and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5): the HTTP side.

The pixels are the business of litevna.render.pipeline, run in the CPU pool.
Here: which instance and frame a URL means, the cache, and the statuses.
Study and series level render their first instance with pixel data (in series
and instance order), as one image, which is what an ``<img>`` tag or a study
list wants; an instance renders its first frame, or every frame as ``image/gif``.
"""

import hashlib

from litevna.cache import or_build, shared
from litevna.cache.memory import MemoryCache
from litevna.dicomweb.wado import Body, check_uids, parse_frame_list
from litevna.http.errors import HTTPError
from litevna.render import pipeline


class Rendered:
    """Rendered frames over the index and the blob store, cached by the instance's bytes."""

    def __init__(self, index, blobs, cpu, cache=None, instance_row=None):
        self._index = index
        self._blobs = blobs
        self._cpu = cpu
        self.cache = cache if cache is not None else MemoryCache()
        # (store_id, study, series, sop) -> row or HTTPError 404: WADO's cached lookup.
        self._instance_row = instance_row or self._lookup

    def render(self, store_id, params, accept, if_none_match, thumbnail, study, series=None,
               sop=None, frame_list=None):
        """A Body (or a Deferred one) with the image, 304 when the ETag matches."""
        check_uids(study, series, sop)
        try:
            asked = pipeline.parse_render_params(params, accept, thumbnail=thumbnail)
        except pipeline.NotAcceptable as exc:
            raise HTTPError(406, str(exc)) from None
        except pipeline.RenderError as exc:
            raise HTTPError(400, str(exc)) from None
        frame = None
        if frame_list is not None:
            numbers = parse_frame_list(frame_list)
            if len(numbers) != 1:
                raise HTTPError(400, "render one frame per request")
            frame = numbers[0]
        row = self._row(store_id, study, series, sop)
        if frame is not None and frame > row["number_of_frames"]:
            raise HTTPError(404, f"frame {frame} is out of range: the instance has "
                                 f"{row['number_of_frames']} frame(s)")
        # The stored bytes' digest names the version: a replacement or DELETE is a new key.
        key = (row["sha256"], frame, asked)
        etag = '"' + hashlib.sha1(repr(key).encode()).hexdigest()[:32] + '"'
        headers = {"Content-Type": asked.media_type, "ETag": etag,
                   "Cache-Control": "private, max-age=3600"}
        if if_none_match is not None and etag in [m.strip() for m in if_none_match.split(",")]:
            return Body(status=304, headers={"ETag": etag}, pieces=b"")
        cached = self.cache.get(key)
        if cached is not None:
            return Body(headers=headers, pieces=cached)
        path = self._blobs.local_path(row["blob_key"])

        def render():
            # Always in the CPU pool: frame and search requests must not wait behind a render.
            if frame is None:
                d = self._cpu(pipeline.render_instance_default, path, asked)
            else:
                d = self._cpu(pipeline.render_frame, path, frame, asked)
            return d.addCallbacks(keep, _as_http_error)

        def keep(image):
            self.cache.put(key, image)
            return image

        remote = shared(self.cache, key)
        d = render() if remote is None else or_build(remote, render)
        return d.addCallback(lambda image: Body(headers=headers, pieces=image))

    def _row(self, store_id, study, series, sop):
        """The instance a rendered URL names: it, or the first with pixel data below it."""
        if sop is not None:
            row = self._instance_row(store_id, study, series, sop)
            if not row["number_of_frames"]:
                raise HTTPError(404, "this instance has no pixel data")
            return row
        rows = self._index.instances_of(store_id, study, series, columns=_ROW_COLUMNS)
        if not rows:
            raise HTTPError(404, "no such " + ("series" if series else "study"))
        for row in rows:
            if row["number_of_frames"]:
                return row
        raise HTTPError(404, "no instance here has pixel data")


    def _lookup(self, store_id, study, series, sop):
        row = self._index.instance(store_id, sop)
        if row is None or row["study_uid"] != study or row["series_uid"] != series:
            raise HTTPError(404, "no such instance")
        return row


_ROW_COLUMNS = "i.sop_instance_uid, i.blob_key, i.sha256, i.number_of_frames"


def _as_http_error(failure):
    error = failure.value
    if isinstance(error, pipeline.FrameOutOfRange):
        raise HTTPError(404, str(error))
    if isinstance(error, pipeline.RenderError):
        raise HTTPError(400, str(error))
    if isinstance(error, pipeline.CannotRender):
        raise HTTPError(406, f"cannot render this instance: {error}")
    return failure
