"""The archive: staged files in, durable indexed instances out.

A part goes staging file → ``parse_part10`` (CPU pool) → group commit (one
writer thread: dedup decision, rename into the blob store, one blob-store sync
for the whole group, one index transaction for everything queued meanwhile). An instance is
reported stored only after that commit, so an acknowledged instance survives a
``kill -9``; a crash before it leaves at most an unreferenced file, which no
query can see.
"""

import errno
import itertools
import os
import queue
import threading
import uuid
from dataclasses import dataclass

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from litevna.dicom.ingest import (
    DUPLICATE_SOP_INSTANCE, NOT_AUTHORIZED, OUT_OF_RESOURCES, PROCESSING_FAILURE, IngestFailure,
    check_study, parse_part10,
)

from litevna.index.search import study_columns

log = Logger()

#: Most instances committed in one index transaction.
MAX_GROUP = 256


@dataclass(frozen=True)
class Outcome:
    """What became of one instance of a STOW request."""

    stored: bool
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    reason: int | None = None
    message: str | None = None
    duplicate: bool = False

    @classmethod
    def failed(cls, reason, message, parsed=None):
        if parsed is None:
            return cls(False, reason=reason, message=message)
        return cls(False, parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_uid,
                   parsed.series_uid, reason, message)


class Staging:
    """A file being received into the staging folder (written on the reactor thread)."""

    _names = itertools.count()
    _prefix = uuid.uuid4().hex[:12]

    def __init__(self, folder):
        self.path = os.path.join(folder, f"{self._prefix}-{next(self._names)}.part")
        self._file = open(self.path, "wb", buffering=1 << 18)
        self.size = 0
        self.error = None

    def write(self, data):
        if self.error is not None:
            return
        try:
            self._file.write(data)
            self.size += len(data)
        except OSError as exc:
            self.error = exc
            self._file.close()

    def close(self):
        """Flush to the OS; IngestFailure if writing failed (a full disk: 0xA700)."""
        if self.error is None:
            try:
                self._file.close()
            except OSError as exc:
                self.error = exc
        if self.error is not None:
            self.discard()
            reason = OUT_OF_RESOURCES if self.error.errno in (errno.ENOSPC, errno.EDQUOT) \
                else PROCESSING_FAILURE
            raise IngestFailure(reason, f"could not stage the instance: {self.error.strerror}")

    def discard(self):
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def blob_key(store_id, parsed):
    """Where an instance's bytes live; the digest makes each version a new file."""
    return (f"{store_id}/{parsed.study_uid}/{parsed.series_uid}/"
            f"{parsed.sop_instance_uid}.{parsed.sha256[:16]}.dcm")




class Archive:
    """Ingests staged files into the blob store and index."""

    def __init__(self, reactor, index, blobs, staging_folder, cpu_pool, replace_duplicates=False,
                 metrics=None):
        self._reactor = reactor
        self.index = index
        self.blobs = blobs
        self.staging_folder = staging_folder
        self._cpu_pool = cpu_pool
        self._committer = GroupCommitter(reactor, index, blobs, replace_duplicates, metrics)
        os.makedirs(staging_folder, exist_ok=True)

    def start(self):
        self.clear_staging()
        self._committer.start()

    def stop(self):
        self._committer.stop()

    def clear_staging(self):
        """Remove files left by requests that never finished (a crash, a restart)."""
        for name in os.listdir(self.staging_folder):
            try:
                os.unlink(os.path.join(self.staging_folder, name))
            except OSError:
                pass

    def new_staging(self):
        return Staging(self.staging_folder)

    def cpu(self, fn, *args):
        """A Deferred of fn(*args) run in the CPU pool (parsing, for ``ingest``'s callers)."""
        return deferToThreadPool(self._reactor, self._cpu_pool, fn, *args)

    def ingest(self, store_id, staging, study_uid=None, scope=None, parsed=None):
        """Store a closed staging file; a Deferred firing with an Outcome (never failing).

        With a scope (a scoped token's), an instance of a study outside it fails with
        0x0124 (SPEC §3). ``parsed``: a Deferred from ``parse`` of the same file, begun
        earlier (a presigned upload parses while it is PUT)."""
        if parsed is None:
            d = deferToThreadPool(self._reactor, self._cpu_pool, parse_part10, staging.path,
                                  study_uid)
        else:
            d = parsed.addCallback(_for_study, study_uid)
        if scope is not None:
            d.addCallback(_in_scope, scope, lambda study: self.index.study(store_id, study))
        d.addCallback(lambda parsed: self._committer.submit(store_id, parsed, staging.path))

        def failed(failure):
            staging.discard()
            if failure.check(IngestFailure):
                return Outcome.failed(failure.value.reason, failure.value.message,
                                      failure.value.parsed)
            log.failure("ingest failed", failure)
            return Outcome.failed(PROCESSING_FAILURE, "the server could not process the instance")

        d.addErrback(failed)
        return d


class GroupCommitter:
    """One thread that commits whatever instances are waiting, in one transaction."""

    def __init__(self, reactor, index, blobs, replace_duplicates, metrics=None):
        self._reactor = reactor
        self._index = index
        self._blobs = blobs
        self._replace = replace_duplicates
        self._metrics = metrics  # a litevna.metrics.Metrics, told what each commit stored
        self._queue = queue.Queue()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="litevna-commit", daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, store_id, parsed, path):
        d = Deferred()
        self._queue.put((store_id, parsed, path, d))
        return d

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            outcomes = self.commit([entry[:3] for entry in batch])
            for (_, _, _, d), outcome in zip(batch, outcomes):
                self._reactor.callFromThread(d.callback, outcome)

    def commit(self, batch):
        """Commit [(store_id, parsed, path)]; return an Outcome for each."""
        outcomes, leftovers, superseded = [], [], []
        self._put = []
        try:
            with self._index.write() as writer:
                for store_id, parsed, path in batch:
                    try:
                        with writer.savepoint():
                            outcome, old_key = self._commit_one(writer, store_id, parsed, path)
                    except Exception as exc:  # noqa: BLE001 - one bad row must not sink the batch
                        log.error("could not index {sop}: {error}",
                                  sop=parsed.sop_instance_uid, error=repr(exc))
                        outcome, old_key = Outcome.failed(
                            PROCESSING_FAILURE, "the index could not record the instance",
                            parsed), None
                    outcomes.append(outcome)
                    if not outcome.stored or outcome.duplicate:
                        leftovers.append(path)
                    if old_key:
                        superseded.append(old_key)
                self._blobs.sync()
        except Exception as exc:  # noqa: BLE001 - the whole transaction is lost: say so per instance
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) or \
                "full" in str(exc).lower()
            log.error("index commit failed: {error}", error=repr(exc))
            reason = OUT_OF_RESOURCES if full else PROCESSING_FAILURE
            outcomes = [Outcome.failed(reason, "the index could not record the instance", parsed)
                        for _, parsed, _ in batch]
            leftovers = [path for _, _, path in batch]
            superseded = self._put  # moved in, but the index never named them
        for path in leftovers:
            _unlink(path)
        for key in superseded:
            self._blobs.delete(key)
        self._put = []
        if self._metrics is not None:
            sizes = [parsed.size for (_, parsed, _), outcome in zip(batch, outcomes)
                     if outcome.stored and not outcome.duplicate]
            self._metrics.instances_stored(len(sizes), sum(sizes))
        return outcomes

    def _commit_one(self, writer, store_id, parsed, path):
        existing = writer.existing(store_id, parsed.sop_instance_uid)
        if existing is not None:
            sha256, old_key, _ = existing
            if sha256 == parsed.sha256:
                return Outcome(True, parsed.sop_class_uid, parsed.sop_instance_uid,
                               parsed.study_uid, parsed.series_uid, duplicate=True), None
            if not self._replace:
                return Outcome.failed(
                    DUPLICATE_SOP_INSTANCE,
                    "an instance with this SOPInstanceUID and different content is stored",
                    parsed), None
        key = blob_key(store_id, parsed)
        self._blobs.put_file(path, key)
        self._put.append(key)
        writer.add_instance(store_id, parsed, key, orjson.dumps(parsed.metadata),
                            replace=existing is not None)
        old_key = existing[1] if existing is not None and existing[1] != key else None
        return Outcome(True, parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_uid,
                       parsed.series_uid), old_key


def _for_study(parsed, study_uid):
    try:
        check_study(parsed.study_uid, study_uid)
    except IngestFailure as failure:
        failure.parsed = parsed
        raise
    return parsed


def _in_scope(parsed, scope, stored_study):
    """The parsed instance if a scoped token may store it (SPEC §3), else 0x0124.

    A study the store already holds is judged by its stored Patient ID, as reads are: an
    instance cannot carry a scope's Patient ID into another patient's study."""
    allowed = parsed.study_uid in scope.study_ids
    if not allowed:
        # The same Patient ID the index keeps, so STOW and QIDO agree on what is in scope.
        patient = study_columns(parsed.study)["patient_id"]
        stored = stored_study(parsed.study_uid)
        if stored is not None:
            patient = stored["patient_id"] if stored["patient_id"] == patient else None
        allowed = scope.allows(parsed.study_uid, patient)
    if not allowed:
        failure = IngestFailure(NOT_AUTHORIZED, "this token may not store instances of study "
                                                f"{parsed.study_uid} (outside its scope)")
        failure.parsed = parsed
        raise failure
    return parsed


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
