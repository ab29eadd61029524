-- Covering indexes of every matching column: a scan (wildcards, fuzzy names)
-- reads an index alone, never the rows with their JSON documents.
DROP INDEX studies_pn_alphabetic;
CREATE INDEX studies_search ON studies (store_id, pn_alphabetic, pn_ideographic, pn_phonetic,
    pn_words, patient_id, patient_birth_date, patient_sex, study_date, study_time_key,
    accession_number, study_id, study_description);
CREATE INDEX series_search ON series (study_pk, modality, series_number, series_description,
    series_date, series_time_key);
-- Bumped by every write to a store's studies: caches of search results key on it.
ALTER TABLE stores ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
