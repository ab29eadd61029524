"""The seams between LiteVNA's layers. Every backend has an in-memory twin
that passes the same contract tests (tests/contracts.py)."""

from zope.interface import Attribute, Interface


class IBlobStore(Interface):
    """Where instance files live, addressed by key (``store/study/sop.dcm``)."""

    def put_file(path, key):
        """Move the finished local file at path under key (replacing any old one)."""

    def sync():
        """Make every put_file so far durable (directory fsyncs)."""

    def open(key):
        """A binary file object for key's bytes; KeyError if absent."""

    def size(key):
        """The byte length of key; KeyError if absent."""

    def delete(key):
        """Remove key; no error if absent."""

    def exists(key):
        """True if key is stored."""

    def local_path(key):
        """A local file path holding key's bytes, for range reads and zero-copy senders."""


class IIndex(Interface):
    """Accounts, stores, keys and the study/series/instance query model.

    Methods are synchronous and thread-safe; the services call them from
    thread pools, never from the reactor thread.
    """

    def migrate():
        """Create or upgrade the schema to the newest version."""

    def create_account(email, password_hash):
        """Add an account; Conflict if the email is taken. Returns its id."""

    def account_by_email(email):
        """The account row (dict) or None."""

    def create_store(label, owner_id):
        """Add an image store; Conflict if the label is taken. Returns its id."""

    def store_by_label(label):
        """The store row (dict) or None."""

    def list_stores():
        """All store rows, by label."""

    def create_api_key(key_id, store_id, name, permissions, expires_at):
        """Record an API key's metadata (never its value)."""

    def api_key(key_id):
        """The API key row (dict) or None."""

    def revoke_api_key(store_id, key_id, when):
        """Mark a key revoked; False if the store has no such key."""

    def api_keys_of(store_id):
        """The store's API key rows (revoked ones too), oldest first."""

    def stores_of(owner_id):
        """The store rows an account owns, by label."""

    def delete_store(store_id):
        """Remove a store and every row under it (its blobs are the caller's)."""

    def add_revocation(identifier, store_id, expires_at, when):
        """Record a revoked key or token id ("key:…", "tok:…") until expires_at (None: ever)."""

    def revoked(identifier):
        """True if identifier was revoked."""

    def revocations_since(when):
        """Every revoked identifier that has not expired by when."""

    def create_session(session_id, account_id, csrf, expires_at):
        """Record a web session (session_id is a digest of the cookie value)."""

    def session(session_id):
        """The session row joined with the account's email, or None."""

    def delete_session(session_id):
        """Forget a session."""

    def write():
        """A context manager yielding an IIndexWriter; commits on clean exit."""

    def instance(store_id, sop_instance_uid):
        """The instance row (dict) or None."""

    def instances_of(store_id, study_uid, series_uid=None, sop_instance_uid=None, columns=None):
        """Rows (dicts) of the instances at a level, in series/instance order."""

    def study(store_id, study_uid):
        """{"id", "study_uid", "patient_id"} of a stored study, or None."""

    def search(store_id, query, use_sql=True, scope=None):
        """(hits, total) of a QIDO-RS Query (litevna.dicom.query) in a store.

        hits: the page, each {"study", "series", "instance"} DICOM JSON records
        (None below the query's level) and the UIDs; total: every match."""

    def generation(store_id):
        """A number that changes with every write to the store's studies (cache keys)."""

    def count_instances(store_id):
        """How many instances the store holds."""


class IIndexWriter(Interface):
    """One write transaction of the query model."""

    def savepoint():
        """A context manager undoing only its own writes if it raises."""

    def existing(store_id, sop_instance_uid):
        """(sha256, blob_key, study_uid) of a stored instance, or None."""

    def add_instance(store_id, parsed, blob_key, metadata, replace):
        """Insert (or replace) one instance and its study/series rows."""

    def delete(store_id, study_uid, series_uid=None, sop_instance_uid=None):
        """Remove a level and what is under it (empty series/studies too); the blob keys."""


class ICache(Interface):
    """Finished response bodies by key; entries may vanish at any time."""

    def get(key):
        """The value stored under key, or None."""

    def put(key, value, size=None):
        """Keep value under key (size: its cost in bytes, len(value) by default)."""


class IRevocationList(Interface):
    """Revoked API key and token ids ("key:<id>", "tok:<jti>"), seen by every process.

    ``is_revoked`` runs on every request: synchronous and cheap; a revocation made
    anywhere is seen within ``staleness`` seconds (SPEC §3: at most one)."""

    staleness = Attribute("seconds a revocation elsewhere may take to be seen here")

    def revoke(identifier, store_id, expires_at):
        """Record a revocation durably and tell the other processes; a Deferred or None."""

    def is_revoked(identifier):
        """True if identifier has been revoked."""


class IClock(Interface):
    """Wall-clock seconds, injectable for tests."""

    seconds = Attribute("callable returning the current time in seconds")
