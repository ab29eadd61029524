"""Which attributes belong to the study and series levels of the query model.

PS3.18 Tables 10.6.3-3/4 name the attributes a QIDO response carries per level;
the Patient, General Study and Patient Study modules (PS3.3 C.7.1.1, C.7.2.1,
C.7.2.2) and the General Series module (C.7.3.1) add the rest a viewer shows.
"""

SPECIFIC_CHARACTER_SET = "00080005"
TIMEZONE_OFFSET = "00080201"

STUDY_TAGS = frozenset({
    SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET,
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080051",  # IssuerOfAccessionNumberSequence
    "00080090",  # ReferringPhysicianName
    "00081030",  # StudyDescription
    "00081032",  # ProcedureCodeSequence
    "00081060",  # NameOfPhysiciansReadingStudy
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100021",  # IssuerOfPatientID
    "00100030",  # PatientBirthDate
    "00100032",  # PatientBirthTime
    "00100040",  # PatientSex
    "00101000",  # OtherPatientIDs
    "00101001",  # OtherPatientNames
    "00101010",  # PatientAge
    "00101020",  # PatientSize
    "00101030",  # PatientWeight
    "00102160",  # EthnicGroup
    "00104000",  # PatientComments
    "0020000D",  # StudyInstanceUID
    "00200010",  # StudyID
})

SERIES_TAGS = frozenset({
    SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET,
    "00080021",  # SeriesDate
    "00080031",  # SeriesTime
    "00080060",  # Modality
    "00080070",  # Manufacturer
    "00081010",  # StationName
    "0008103E",  # SeriesDescription
    "00081090",  # ManufacturerModelName
    "00180015",  # BodyPartExamined
    "0020000E",  # SeriesInstanceUID
    "00200011",  # SeriesNumber
    "00200060",  # Laterality
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
    "00400275",  # RequestAttributesSequence
})
