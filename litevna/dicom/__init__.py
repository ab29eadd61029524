"""DICOM knowledge as pure functions over pydicom: parsing, the JSON model, frame tables."""
