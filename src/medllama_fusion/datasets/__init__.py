"""Source datasets: each owns its files and turns them into samples.

:class:`OpenIDataset` reads OpenI in the raw NLM release or the MONAI TransCheX CSV layout (and
can download the release), :class:`CSVDataset` any CSV of image path, report and label columns;
both are :class:`SampleDataset` s. They are built on the readers for the NLM XML
(:mod:`~medllama_fusion.datasets.nlm_reports`) and CSV files
(:mod:`~medllama_fusion.datasets.csv_reader`), the OpenI labels and MeSH mapping
(:mod:`~medllama_fusion.datasets.labels`) and the report format
(:mod:`~medllama_fusion.datasets.reports`). A source never raises for a bad sample: it returns
the :class:`DataProblem` s it met beside the samples
(:mod:`~medllama_fusion.datasets.problems`). What happens next (curation, preprocessing,
batches) is in :mod:`medllama_fusion.data` and :mod:`medllama_fusion.datamodules`.
"""

from medllama_fusion.datasets.base import (
    MODALITIES,
    SPLIT_ALIASES,
    SPLIT_NAMES,
    FusionSample,
    LoadedSamples,
    SampleDataset,
    check_modalities,
)
from medllama_fusion.datasets.csv import CSVDataset
from medllama_fusion.datasets.csv_reader import CSVReadResult, read_samples_csv
from medllama_fusion.datasets.download import (
    OPENI_CHECKSUMS,
    OPENI_URLS,
    ChecksumError,
    download_file,
    download_openi,
    marker_path,
)
from medllama_fusion.datasets.labels import (
    MESH_RULES,
    MONAI_COLUMN_NAMES,
    NUM_OPENI_LABELS,
    OPENI_LABELS,
    MeshRule,
    column_key,
    labels_for_mesh_term,
    labels_from_mesh,
    mesh_mapping_markdown,
    normalize_label_name,
    normalize_label_names,
    split_mesh_term,
)
from medllama_fusion.datasets.nlm_reports import (
    FRONTAL_VIEWS,
    IMAGES_FOLDER,
    REPORTS_FOLDER,
    OpenIReport,
    ParseProblem,
    iter_report_files,
    load_openi_reports,
    load_view_positions,
    metadata_image_id,
    parse_report_xml,
    resolve_reports_source,
    select_images,
)
from medllama_fusion.datasets.openi import LAYOUTS, OpenIDataset, detect_layout, find_view_metadata
from medllama_fusion.datasets.problems import (
    CSVEncodingError,
    DataFileNotFoundError,
    DataProblem,
    DataProblemError,
    EmptySplitError,
    SplitLeakError,
)
from medllama_fusion.datasets.reports import format_report, strip_anonymization

__all__ = [
    "FRONTAL_VIEWS",
    "IMAGES_FOLDER",
    "LAYOUTS",
    "MESH_RULES",
    "MODALITIES",
    "MONAI_COLUMN_NAMES",
    "NUM_OPENI_LABELS",
    "OPENI_CHECKSUMS",
    "OPENI_LABELS",
    "OPENI_URLS",
    "REPORTS_FOLDER",
    "SPLIT_ALIASES",
    "SPLIT_NAMES",
    "CSVDataset",
    "CSVEncodingError",
    "CSVReadResult",
    "ChecksumError",
    "DataFileNotFoundError",
    "DataProblem",
    "DataProblemError",
    "EmptySplitError",
    "FusionSample",
    "LoadedSamples",
    "MeshRule",
    "OpenIDataset",
    "OpenIReport",
    "ParseProblem",
    "SampleDataset",
    "SplitLeakError",
    "check_modalities",
    "column_key",
    "detect_layout",
    "download_file",
    "download_openi",
    "find_view_metadata",
    "format_report",
    "iter_report_files",
    "labels_for_mesh_term",
    "labels_from_mesh",
    "load_openi_reports",
    "load_view_positions",
    "marker_path",
    "mesh_mapping_markdown",
    "metadata_image_id",
    "normalize_label_name",
    "normalize_label_names",
    "parse_report_xml",
    "read_samples_csv",
    "resolve_reports_source",
    "select_images",
    "split_mesh_term",
    "strip_anonymization",
]
