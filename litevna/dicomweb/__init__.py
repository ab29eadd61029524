"""DICOMweb services (PS3.18): STOW, QIDO, WADO, DELETE, as thin routes over the archive."""
