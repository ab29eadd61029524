"""Makes ``twistd litevna`` available once LiteVNA is installed."""

from twisted.application.service import ServiceMaker

litevna = ServiceMaker("LiteVNA", "litevna.tap", "A self-hosted DICOMweb image store", "litevna")
