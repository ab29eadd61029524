"""The HTTP application: a thin Klein route table over the services."""

import os
import re

import orjson
import werkzeug.exceptions
from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from litevna.auth.credentials import request_token
from litevna.auth.guard import Forbidden, Unauthorized
from litevna.auth.tokens import TokenError
from litevna.dicomweb.qido import query_params
from litevna.dicomweb.stow import StowBody, stow_response, stow_target, stow_warning
from litevna.dicomweb.wado import DICOM_JSON as DICOM_JSON_TYPE
from litevna.dicomweb.wado import accept_ranges, check_uids
from litevna.http.cors import Cors
from litevna.http.errors import HTTPError, write_error
from litevna.http.jsonapi import read_json, respond
from litevna.http.producers import PiecesProducer
from litevna.http.site import LiteSite
from litevna.metrics import CONTENT_TYPE as METRICS_TYPE
from litevna.metrics import Metrics

log = Logger()
DICOM_JSON = b"application/dicom+json"
UPLOAD_PATH = re.compile(r"^/uploads/([^/]+)/([^/]+)$")


def base_url(request, public_url, label):
    """The DICOMweb root of a store as the client reached it (never with a token in it)."""
    if public_url:
        return f"{public_url}/{label}/dicomweb"
    host = (request.getHeader(b"host") or b"localhost").decode("latin-1")
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host}/{label}/dicomweb"


class Application:
    """Routes → guard → services. Built by ``litevna.service.make_application``."""

    app = Klein()

    def __init__(self, config, archive, guard, wado, qido, rendered, readiness=(), tokens=None,
                 accounts=None, uploads=None, metrics=None):
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.uploads = uploads
        self.accounts = accounts
        self.archive = archive
        self.guard = guard
        self.tokens = tokens
        self.wado = wado
        self.qido = qido
        self.rendered = rendered
        self._readiness = readiness

    def site(self):
        return LiteSite(self.app.resource(), body_router=self.route_body,
                        cors=Cors(self.config.cors_origins), metrics=self.metrics)

    def base(self, request, label):
        return base_url(request, self.config.public_url, label)

    def authorize(self, request, label, permission):
        """The request's Principal for store label, or the HTTPError to answer with."""
        try:
            return self.guard.authenticate(request_token(request), label, permission)
        except Unauthorized as exc:
            raise HTTPError(401, str(exc), {"WWW-Authenticate": 'Bearer realm="litevna"'}) from None
        except Forbidden as exc:
            raise HTTPError(403, str(exc)) from None

    def authorize_study(self, request, label, permission, study):
        """authorize(), and a 404 (as for a study that does not exist: SPEC §3 leaks
        nothing) when a scoped token asks for a study outside its scope."""
        check_uids(study)
        principal = self.authorize(request, label, permission)
        scope = principal.scope
        if scope is not None and study not in scope.study_ids:
            row = self.archive.index.study(principal.store_id, study)
            if row is None or not scope.allows(study, row["patient_id"]):
                raise HTTPError(404, "no such study")
        return principal

    def route_body(self, request, method, path, length):
        """Choose the streaming sink for a request body, as soon as its headers are in."""
        if method == b"PUT":
            match = UPLOAD_PATH.match(path.decode("latin-1"))
            if match is None or self.uploads is None:
                return None
            return self.uploads.open_put(request, request.channel._path, *match.groups())
        if method != b"POST":
            return None
        target = stow_target(path.decode("latin-1"))
        if target is None or b"uploadId=" in request.channel._path:
            return None
        label, study_uid = target
        principal = self.authorize(request, label, "write")
        if length is not None and length > self.config.max_body:
            raise HTTPError(413, f"the request body exceeds {self.config.max_body} bytes; use "
                                 "POST .../studies/upload-url for large files")
        content_type = request.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
        return StowBody(self.archive, principal, content_type.decode("latin-1"), study_uid,
                        self.config.max_body, request.channel.transport)

    @app.handle_errors(HTTPError)
    def _http_error(self, request, failure):
        return write_error(request, failure.value)

    @app.handle_errors(werkzeug.exceptions.HTTPException)
    def _routing_error(self, request, failure):
        return write_error(request, HTTPError(failure.value.code, failure.value.name))

    @app.handle_errors(Exception)
    def _unexpected(self, request, failure):
        log.failure("unhandled error in {method} {path}", failure,
                    method=request.method, path=request.path)
        return write_error(request, HTTPError(500, "internal error; the server log has details"))

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return orjson.dumps({"status": "ok", "pid": os.getpid()})

    @app.route("/readyz", methods=["GET"])
    def readyz(self, request):
        problems = [name for name, check in self._readiness if not _passes(check)]
        request.setHeader(b"Content-Type", b"application/json")
        if problems:
            request.setResponseCode(503)
        return orjson.dumps({"status": "unready" if problems else "ready", "failing": problems})

    @app.route("/metrics", methods=["GET"])
    def prometheus_metrics(self, request):
        """Prometheus text (SPEC §1, beside /healthz and /readyz, and like them without
        authentication: operators scrape it from inside their network). It holds counts
        per route family and cache, never a store label, a UID or a token."""
        request.setHeader(b"Content-Type", METRICS_TYPE)
        return self.metrics.exposition()

    @app.route("/<label>/dicomweb/studies", methods=["POST"])
    @app.route("/<label>/dicomweb/studies/<study_uid>", methods=["POST"])
    def stow(self, request, label, study_uid=None):
        sink = request.body_sink
        if b"uploadId" in request.args:
            # Step 3 of the presigned flow: the body was PUT before.
            stow_target(request.path.decode("latin-1"))
            principal = self.authorize(request, label, "write")
            upload_id = request.args[b"uploadId"][0].decode("latin-1")
            d = self.uploads.process(principal, upload_id, study_uid)
        elif sink is None:
            stow_target(request.path.decode("latin-1"))  # a bad Study UID is a 400 even here
            self.authorize(request, label, "write")
            raise HTTPError(400, "the request has no body: send application/dicom or "
                                 "multipart/related; type=\"application/dicom\"")
        else:
            d = maybeDeferred(sink.finish)

        def respond(outcomes):
            status, body = stow_response(outcomes, base_url(request, self.config.public_url,
                                                                 label))
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", DICOM_JSON)
            warning = stow_warning(outcomes)
            if warning:
                request.setHeader(b"Warning", warning.encode())
            return orjson.dumps(body)

        return d.addCallback(respond)

    @app.route("/<label>/dicomweb/studies/upload-url", methods=["POST"])
    def upload_url(self, request, label):
        """Step 1 of the presigned flow (client's document, "Large File Uploads")."""
        principal = self.authorize(request, label, "write")
        if self.config.public_url:
            server = self.config.public_url
        else:
            server = base_url(request, None, label).rsplit(f"/{label}/dicomweb", 1)[0]
        return respond(request, self.uploads.issue(principal, server))

    @app.route("/uploads/<label>/<upload_id>", methods=["PUT"])
    def upload_put(self, request, label, upload_id):
        """Step 2: the body has streamed into its sink (see route_body)."""
        if request.body_sink is None:
            raise HTTPError(404, "no such upload")
        return respond(request, request.body_sink.finish())


def send(request, body):
    """Write a wado.Body (or, once it fires, a Deferred one): headers now, pieces
    streamed by a producer."""
    if isinstance(body, Deferred):
        return body.addCallback(lambda ready: send(request, ready))
    request.setResponseCode(body.status)
    for name, value in body.headers.items():
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    if isinstance(body.pieces, (bytes, bytearray)):
        request.setHeader(b"Content-Length", str(len(body.pieces)).encode())
        return bytes(body.pieces)
    if body.length is not None:
        # A fixed length means no chunk framing, so file ranges may go out by sendfile.
        request.setHeader(b"Content-Length", str(body.length).encode())
    return PiecesProducer(request, body.pieces, zero_copy=body.length is not None).start()


def accepts_gzip(request):
    value = (request.getHeader(b"accept-encoding") or b"").lower()
    return any(part.split(b";")[0].strip() in (b"gzip", b"*") for part in value.split(b","))


def _passes(check):
    try:
        check()
    except Exception:  # noqa: BLE001 - a readiness probe reports, it does not raise
        return False
    return True


def _wado_routes(cls):
    """The WADO-RS and DELETE routes, added to Application below (kept thin)."""
    app = cls.app

    @app.route("/<label>/dicomweb/studies/<study>", methods=["GET"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>", methods=["GET"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>",
               methods=["GET"])
    def retrieve(self, request, label, study, series=None, sop=None):
        principal = self.authorize_study(request, label, "read", study)
        d = maybeDeferred(self.wado.retrieve, principal.store_id, accept_ranges(request),
                          study, series, sop)
        return d.addCallback(lambda body: send(request, body))

    @app.route("/<label>/dicomweb/studies/<study>/metadata", methods=["GET"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/metadata", methods=["GET"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>/metadata",
               methods=["GET"])
    def metadata(self, request, label, study, series=None, sop=None):
        principal = self.authorize_study(request, label, "read", study)
        if not any(r.matches(DICOM_JSON_TYPE) or r.type == "application/json"
                   for r in accept_ranges(request)):
            raise HTTPError(406, "metadata is available as application/dicom+json")
        gzip = accepts_gzip(request)
        base = self.base(request, label)
        etag = self.wado.metadata_etag(principal.store_id, base, gzip, study, series, sop)
        request.setHeader(b"ETag", etag.encode())
        request.setHeader(b"Cache-Control", b"private, no-cache")
        request.setHeader(b"Vary", b"Accept-Encoding")
        match = request.getHeader(b"if-none-match")
        if match is not None and etag.encode() in [m.strip() for m in match.split(b",")]:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", DICOM_JSON)
        if gzip:
            request.setHeader(b"Content-Encoding", b"gzip")
        return self.wado.metadata(principal.store_id, base, gzip, etag, study, series, sop)

    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>"
               "/frames/<frame_list>", methods=["GET"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>"
               "/frame/<frame_list>", methods=["GET"])
    def frames(self, request, label, study, series, sop, frame_list):
        principal = self.authorize_study(request, label, "read", study)
        return send(request, self.wado.frames(principal.store_id, accept_ranges(request),
                                              study, series, sop, frame_list))

    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>"
               "/bulkdata/<path:tag_path>", methods=["GET"])
    def bulkdata(self, request, label, study, series, sop, tag_path):
        principal = self.authorize_study(request, label, "read", study)
        return send(request, self.wado.bulkdata(principal.store_id, accept_ranges(request),
                                                request.getHeader(b"range"), study, series,
                                                sop, tag_path))

    @app.route("/<label>/dicomweb/studies/<study>", methods=["DELETE"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>", methods=["DELETE"])
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>",
               methods=["DELETE"])
    def delete(self, request, label, study, series=None, sop=None):
        principal = self.authorize_study(request, label, "delete", study)

        def deleted(count):
            self.metrics.instances_deleted(count)
            request.setResponseCode(204)
            return b""

        return self.wado.delete(principal.store_id, study, series, sop).addCallback(deleted)

    return cls


_wado_routes(Application)


def _qido_routes(cls):
    """The QIDO-RS search routes (PS3.18 §10.6), added to Application below."""
    app = cls.app

    @app.route("/<label>/dicomweb/studies", methods=["GET"], defaults={"level": "study"})
    @app.route("/<label>/dicomweb/series", methods=["GET"], defaults={"level": "series"})
    @app.route("/<label>/dicomweb/instances", methods=["GET"], defaults={"level": "instance"})
    @app.route("/<label>/dicomweb/studies/<study>/series", methods=["GET"],
               defaults={"level": "series"})
    @app.route("/<label>/dicomweb/studies/<study>/instances", methods=["GET"],
               defaults={"level": "instance"})
    @app.route("/<label>/dicomweb/studies/<study>/series/<series>/instances", methods=["GET"],
               defaults={"level": "instance"})
    def search(self, request, label, level, study=None, series=None):
        principal = self.authorize(request, label, "read")
        if not any(r.matches(DICOM_JSON_TYPE) or r.type == "application/json"
                   for r in accept_ranges(request)):
            raise HTTPError(406, "search results are available as application/dicom+json")
        _, _, raw_query = request.uri.partition(b"?")
        d = maybeDeferred(self.qido.search, principal.store_id, level, query_params(raw_query),
                          self.base(request, label), accepts_gzip(request), study, series,
                          principal.scope)
        return d.addCallback(lambda body: send(request, body))

    return cls


_qido_routes(Application)


def _rendered_routes(cls):
    """…/rendered and …/thumbnail (PS3.18 §10.4.1.1.3) at every level, added below."""
    app = cls.app
    instance = "/<label>/dicomweb/studies/<study>/series/<series>/instances/<sop>"
    study = "/<label>/dicomweb/studies/<study>"
    paths = (study, study + "/series/<series>", instance, instance + "/frames/<frame_list>",
             instance + "/frame/<frame_list>")

    def render(self, request, label, thumbnail, study, series=None, sop=None, frame_list=None):
        principal = self.authorize_study(request, label, "read", study)
        _, _, raw_query = request.uri.partition(b"?")
        accept = request.getHeader(b"accept")
        match = request.getHeader(b"if-none-match")
        d = maybeDeferred(self.rendered.render, principal.store_id, query_params(raw_query),
                          accept.decode("latin-1") if accept else None,
                          match.decode("latin-1") if match else None,
                          thumbnail, study, series, sop, frame_list)
        return d.addCallback(lambda body: send(request, body))

    # One endpoint per rule: werkzeug redirects between rules of one endpoint that
    # share defaults (…/frame/ would be a 308 to …/frames/).
    for number, path in enumerate(paths):
        for kind, thumbnail in (("rendered", False), ("thumbnail", True)):
            render = app.route(path + "/" + kind, methods=["GET"], endpoint=f"{kind}_{number}",
                               defaults={"thumbnail": thumbnail})(render)
    return cls


_rendered_routes(Application)


def _token_routes(cls):
    """POST /image-stores/{label}/tokens/create and …/revoke (SPEC §3, client's document)."""
    app = cls.app

    def judged(fn):
        try:
            return fn()
        except TokenError as exc:
            raise HTTPError(400, str(exc)) from None
        except Unauthorized as exc:
            raise HTTPError(401, str(exc), {"WWW-Authenticate": 'Bearer realm="litevna"'}) from None
        except Forbidden as exc:
            raise HTTPError(403, str(exc)) from None

    @app.route("/image-stores/<label>/tokens/create", methods=["POST"])
    def create_token(self, request, label):
        body = read_json(request)
        unknown = set(body) - {"api_key_value", "ttl", "scopes", "permissions"}
        if unknown:
            raise HTTPError(400, f"unknown fields: {', '.join(sorted(unknown))}")
        return respond(request, judged(lambda: self.tokens.create(
            label, body.get("api_key_value"), body.get("ttl"), body.get("scopes"),
            body.get("permissions"))))

    @app.route("/image-stores/<label>/tokens/revoke", methods=["POST"])
    def revoke_token(self, request, label):
        body = read_json(request)
        value = body.get("token", body.get("api_key_value"))
        return respond(request, judged(lambda: self.tokens.revoke(label, value)))

    return cls


_token_routes(Application)

# The web UI and its JSON account API (litevna.ui) share this route table.
from litevna.ui import add_routes  # noqa: E402 - after Application exists

add_routes(Application)
