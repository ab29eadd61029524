"""Which attributes belong to the study and series levels of the query model.

PS3.18 Tables 10.6.3-3/4 name the attributes a QIDO response carries per level;
the Patient, General Study and Patient Study modules (PS3.3 C.7.1.1, C.7.2.1,
C.7.2.2), the General Series, Frame of Reference and General Equipment modules
(C.7.3.1, C.7.4.1, C.7.5.1) add the rest (``includefield=all``). Anything else
is an instance attribute.
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
    "00081048",  # PhysiciansOfRecord
    "00081080",  # AdmittingDiagnosesDescription
    "00101002",  # OtherPatientIDsSequence
    "00102000",  # MedicalAlerts
    "00102110",  # Allergies
    "00102180",  # Occupation
    "001021B0",  # AdditionalPatientHistory
    "001021C0",  # PregnancyStatus
    "00102201",  # PatientSpeciesDescription
    "00102292",  # PatientBreedDescription
    "00120062",  # PatientIdentityRemoved
    "00321032",  # RequestingPhysician
    "00321060",  # RequestedProcedureDescription
    "00380010",  # AdmissionID
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
    # The rest of General Series (C.7.3.1), Frame of Reference (C.7.4.1) and General
    # Equipment (C.7.5.1).
    "00081050",  # PerformingPhysicianName
    "00081070",  # OperatorsName
    "00081111",  # ReferencedPerformedProcedureStepSequence
    "00081250",  # RelatedSeriesSequence
    "0008103F",  # SeriesDescriptionCodeSequence
    "00181030",  # ProtocolName
    "00185100",  # PatientPosition
    "00280108",  # SmallestPixelValueInSeries
    "00280109",  # LargestPixelValueInSeries
    "00400250",  # PerformedProcedureStepEndDate
    "00400251",  # PerformedProcedureStepEndTime
    "00400253",  # PerformedProcedureStepID
    "00400254",  # PerformedProcedureStepDescription
    "00400260",  # PerformedProtocolCodeSequence
    "00400280",  # CommentsOnThePerformedProcedureStep
    "00102210",  # AnatomicalOrientationType
    "00200052",  # FrameOfReferenceUID
    "00201040",  # PositionReferenceIndicator
    "00080080",  # InstitutionName
    "00080081",  # InstitutionAddress
    "00081040",  # InstitutionalDepartmentName
    "00181000",  # DeviceSerialNumber
    "00181020",  # SoftwareVersions
    "00181050",  # SpatialResolution
    "00181200",  # DateOfLastCalibration
    "00181201",  # TimeOfLastCalibration
})
