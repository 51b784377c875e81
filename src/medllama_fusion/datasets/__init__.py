"""Datasets: the data sources and what reading them needs.

Source datasets own their files (:class:`OpenIDataset` for the raw NLM release and the MONAI
CSVs, :class:`CSVDataset` for generic CSVs; both :class:`SampleDataset`), built on the readers
(:mod:`~medllama_fusion.datasets.nlm_reports` for the NLM XML,
:mod:`~medllama_fusion.datasets.csv_reader`), the OpenI labels and MeSH mapping
(:mod:`~medllama_fusion.datasets.labels`), report text and tokenization
(:mod:`~medllama_fusion.datasets.text`), image I/O (:mod:`~medllama_fusion.datasets.images`)
and the bad-input policy (:mod:`~medllama_fusion.datasets.validation`).
:class:`FusionDataset` is the per-split torch dataset the data modules batch;
:mod:`~medllama_fusion.datasets.download` fetches the release and
:mod:`~medllama_fusion.datasets.synthetic` writes synthetic demo data
(``python -m medllama_fusion.datasets.demo``).
"""

from medllama_fusion.datasets.base import LoadedSamples, SampleDataset
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
from medllama_fusion.datasets.fusion_dataset import (
    MODALITIES,
    FusionCollator,
    FusionDataset,
    FusionSample,
    ImageReadError,
    check_modalities,
)
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
from medllama_fusion.datasets.synthetic import (
    DEMO_SEED,
    build_demo_tokenizer,
    make_demo_dataset,
    write_demo_root,
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
    CSVEncodingError,
    DataFileNotFoundError,
    DataProblem,
    DataProblemError,
    EmptySplitError,
    SplitLeakError,
    apply_bad_input_policy,
)

__all__ = [
    "DEMO_SEED",
    "FRONTAL_VIEWS",
    "IMAGES_FOLDER",
    "LABEL_SYNONYMS",
    "LAYOUTS",
    "MESH_RULES",
    "MODALITIES",
    "MONAI_COLUMN_NAMES",
    "NUM_OPENI_LABELS",
    "OPENI_CHECKSUMS",
    "OPENI_LABELS",
    "OPENI_URLS",
    "REPORTS_FOLDER",
    "CSVDataset",
    "CSVEncodingError",
    "CSVReadResult",
    "ChecksumError",
    "DataFileNotFoundError",
    "DataProblem",
    "DataProblemError",
    "EmptySplitError",
    "FusionCollator",
    "FusionDataset",
    "FusionSample",
    "ImageReadError",
    "LoadedSamples",
    "MeshRule",
    "OpenIDataset",
    "OpenIReport",
    "ParseProblem",
    "SampleDataset",
    "SplitLeakError",
    "apply_bad_input_policy",
    "build_demo_tokenizer",
    "build_image_transform",
    "check_modalities",
    "column_key",
    "detect_layout",
    "download_file",
    "download_openi",
    "find_view_metadata",
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
    "write_demo_root",
]
