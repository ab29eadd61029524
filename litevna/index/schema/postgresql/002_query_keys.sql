-- QIDO-RS matching columns (PS3.4 C.2.2.2), normalized by litevna.dicom.query:
-- Patient's Name per component group upper-cased, its folded words for fuzzy
-- matching, and times padded to HHMMSS.ffffff. Existing rows are filled in by
-- the index's upgrade step for this version.
ALTER TABLE studies ADD COLUMN pn_alphabetic TEXT COLLATE "C";
ALTER TABLE studies ADD COLUMN pn_ideographic TEXT COLLATE "C";
ALTER TABLE studies ADD COLUMN pn_phonetic TEXT COLLATE "C";
ALTER TABLE studies ADD COLUMN pn_words TEXT COLLATE "C";
ALTER TABLE studies ADD COLUMN study_time_key TEXT COLLATE "C";
ALTER TABLE series ADD COLUMN series_time_key TEXT COLLATE "C";
CREATE INDEX studies_pn_alphabetic ON studies (store_id, pn_alphabetic);
CREATE INDEX studies_study_uid ON studies (study_uid);
CREATE INDEX series_modality ON series (modality, study_pk);
CREATE INDEX instances_series_pk ON instances (series_pk, id);
