-- Accounts, image stores and API keys (SPEC §2).
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE stores (
    id INTEGER PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    owner_id INTEGER NOT NULL REFERENCES accounts(id),
    created_at REAL NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
-- The query model (PS3.4 C.6.1): study, series, instance. Columns are the
-- indexed matching keys; attrs/metadata hold the DICOM JSON returned.
CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    study_uid TEXT NOT NULL,
    patient_id TEXT,
    patient_name TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    study_date TEXT,
    study_time TEXT,
    accession_number TEXT,
    study_id TEXT,
    study_description TEXT,
    referring_physician_name TEXT,
    attrs BLOB NOT NULL,
    UNIQUE (store_id, study_uid)
);
CREATE INDEX studies_patient_id ON studies (store_id, patient_id);
CREATE INDEX studies_study_date ON studies (store_id, study_date);
CREATE INDEX studies_accession ON studies (store_id, accession_number);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    study_pk INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    series_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    series_description TEXT,
    series_date TEXT,
    series_time TEXT,
    attrs BLOB NOT NULL,
    UNIQUE (study_pk, series_uid)
);
CREATE INDEX series_uid ON series (series_uid);
CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    series_pk INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    number_of_frames INTEGER NOT NULL,
    rows INTEGER,
    columns INTEGER,
    bits_allocated INTEGER,
    transfer_syntax TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    frames BLOB,
    metadata BLOB NOT NULL,
    stored_at REAL NOT NULL,
    UNIQUE (store_id, sop_instance_uid)
);
CREATE INDEX instances_series ON instances (series_pk, instance_number);
