"""Datasets: OpenI labels, parsing, report text, download, images, CSVs, demo data.

OpenI labels and MeSH mapping, raw-release parsing, report text, download, image I/O, CSV
reading, the bad-input policy, the torch dataset and the synthetic demo data.
"""

from medllama_fusion.datasets.csv import CSVReadResult, read_samples_csv
from medllama_fusion.datasets.demo import build_demo_tokenizer, make_demo_dataset
from medllama_fusion.datasets.download import (
    OPENI_CHECKSUMS,
    OPENI_URLS,
    ChecksumError,
    download_file,
    download_openi,
    marker_path,
)
from medllama_fusion.datasets.fusion_dataset import FusionCollator, FusionDataset, FusionSample
from medllama_fusion.datasets.images import (
    build_image_transform,
    is_dicom,
    load_image,
    read_image,
    verify_image,
)
from medllama_fusion.datasets.labels import (
    MESH_RULES,
    MONAI_COLUMN_NAMES,
    NUM_OPENI_LABELS,
    OPENI_LABELS,
    MeshRule,
    labels_for_mesh_term,
    labels_from_mesh,
    mesh_mapping_markdown,
    normalize_label_name,
    normalize_label_names,
    split_mesh_term,
)
from medllama_fusion.datasets.openi import (
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
from medllama_fusion.datasets.text import (
    LABEL_SYNONYMS,
    format_report,
    label_word_pattern,
    load_tokenizer,
    mask_label_words,
    strip_anonymization,
    tokenization_cache_key,
    tokenize_reports,
    tokenizer_fingerprint,
)
from medllama_fusion.datasets.validation import (
    DataProblem,
    DataProblemError,
    apply_bad_input_policy,
)

__all__ = [
    "FRONTAL_VIEWS",
    "IMAGES_FOLDER",
    "LABEL_SYNONYMS",
    "MESH_RULES",
    "MONAI_COLUMN_NAMES",
    "NUM_OPENI_LABELS",
    "OPENI_CHECKSUMS",
    "OPENI_LABELS",
    "OPENI_URLS",
    "REPORTS_FOLDER",
    "CSVReadResult",
    "ChecksumError",
    "DataProblem",
    "DataProblemError",
    "FusionCollator",
    "FusionDataset",
    "FusionSample",
    "MeshRule",
    "OpenIReport",
    "ParseProblem",
    "apply_bad_input_policy",
    "build_demo_tokenizer",
    "build_image_transform",
    "download_file",
    "download_openi",
    "format_report",
    "is_dicom",
    "iter_report_files",
    "label_word_pattern",
    "labels_for_mesh_term",
    "labels_from_mesh",
    "load_image",
    "load_openi_reports",
    "load_tokenizer",
    "load_view_positions",
    "make_demo_dataset",
    "marker_path",
    "mask_label_words",
    "mesh_mapping_markdown",
    "metadata_image_id",
    "normalize_label_name",
    "normalize_label_names",
    "parse_report_xml",
    "read_image",
    "read_samples_csv",
    "resolve_reports_source",
    "select_images",
    "split_mesh_term",
    "strip_anonymization",
    "tokenization_cache_key",
    "tokenize_reports",
    "tokenizer_fingerprint",
    "verify_image",
]
