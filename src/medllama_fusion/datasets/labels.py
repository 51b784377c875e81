"""The 14 OpenI disease labels and the MeSH → label mapping used for the raw NLM release.

The paper (arXiv 2412.01306) uses the 14 CheXpert-style labels of the MONAI TransCheX OpenI
tutorial, in this order (:data:`OPENI_LABELS`)::

    Atelectasis, Cardiomegaly, Consolidation, Edema, Enlarged-Cardiomediastinum, Fracture,
    Lung-Lesion, Lung-Opacity, No-Finding, Pleural-Effusion, Pleural-Other, Pneumonia,
    Pneumothorax, Support-Devices

The MONAI tutorial CSV spells one column with an underscore (``Pleural_Other``); see
:data:`MONAI_COLUMN_NAMES`. :func:`normalize_label_name` accepts hyphen, underscore and space
spellings in any case and returns the canonical hyphenated name.

The raw NLM release (``NLMCXR_reports.tgz``) carries no CheXpert labels, only manually assigned
MeSH-style terms (``<MeSH><major>``) of the form ``Heading/qualifier/qualifier...``, for example
``Cardiomegaly/borderline``, ``Lung/hypoinflation``, ``Opacity/lung/base/left/mild``, ``normal``
or ``Calcified Granuloma/lung/upper lobe/right``. :func:`labels_from_mesh` derives the 14 labels
from those terms with the explicit rule table :data:`MESH_RULES`: a term matches a rule when its
main heading (text before the first ``/``, compared case- and whitespace-insensitively) equals the
rule heading, at least one of its qualifiers is in the rule's ``qualifiers`` (when given) and none
is in the rule's ``exclude`` list. Several rules may fire for one term (``Hydropneumothorax`` is
both Pleural-Effusion and Pneumothorax). The table follows the CheXpert labeler's observation
definitions (e.g. scarring and airspace disease count as Lung-Opacity, vascular congestion as
Edema) restricted to what the MeSH vocabulary of the release expresses. ``No-Finding`` is set when
a report carries the term ``normal`` and no other rule fires. Terms that match no rule
(``Calcinosis``, ``Thoracic Vertebrae``, ``No Indexing``, ...) set no label.

Rule table (also available as Markdown via :func:`mesh_mapping_markdown`):

=====================================  ==========================  ===============================
MeSH main heading                      qualifier condition         label
=====================================  ==========================  ===============================
Pulmonary Atelectasis, Atelectasis,    any                         Atelectasis
Atelectases
Cardiomegaly                           any                         Cardiomegaly
Cardiac Shadow, Heart                  enlarged                    Cardiomegaly
Consolidation                          any                         Consolidation
Pulmonary Edema, Edema, Pulmonary      any                         Edema
Congestion, Heart Failure
Mediastinum                            prominent/enlarged/widened  Enlarged-Cardiomediastinum
Cardiomegaly, Cardiac Shadow           borderline                  Enlarged-Cardiomediastinum
Fractures, Bone, Fracture, Fractures   any                         Fracture
Nodule, Cavitation                     any                         Lung-Lesion
Mass, Lung                             lung/thorax/right/left;     Lung-Lesion
                                       Lung: hypodense/mass
Opacity                                not on bone/soft tissue     Lung-Opacity
Infiltrate, Airspace Disease           any                         Lung-Opacity
Lung Diseases, Interstitial            any                         Lung-Opacity
Density, Cicatrix                      lung                        Lung-Opacity
normal                                 only term mapped            No-Finding
Pleural Effusion, Hemothorax           any                         Pleural-Effusion
Hydropneumothorax, Hemopneumothorax    any                         Pleural-Effusion + Pneumothorax
Pleural Diseases, Pleura               any                         Pleural-Other
Thickening, Cicatrix                   pleura                      Pleural-Other
Costophrenic Angle                     blunted                     Pleural-Other
Pneumonia                              any                         Pneumonia
Pneumothorax                           any                         Pneumothorax
Catheters, Indwelling; Implanted       any                         Support-Devices
Medical Device; Tube, Inserted;
Surgical Instruments; Medical
Device; Stents
=====================================  ==========================  ===============================

The exact conditions are the entries of :data:`MESH_RULES`; the rendered Markdown table is
generated from it, so documentation cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# label names
# ---------------------------------------------------------------------------------------------

OPENI_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged-Cardiomediastinum",
    "Fracture",
    "Lung-Lesion",
    "Lung-Opacity",
    "No-Finding",
    "Pleural-Effusion",
    "Pleural-Other",
    "Pneumonia",
    "Pneumothorax",
    "Support-Devices",
)
"""The 14 labels in the order of the MONAI TransCheX OpenI tutorial and the paper."""

NUM_OPENI_LABELS: int = len(OPENI_LABELS)

MONAI_COLUMN_NAMES: dict[str, str] = {
    label: ("Pleural_Other" if label == "Pleural-Other" else label) for label in OPENI_LABELS
}
"""Canonical label name → column name in the MONAI TransCheX OpenI CSV files."""


def column_key(name: str) -> str:
    """Return the spelling-insensitive key of a label or column name.

    Lower case with ``-``, ``_`` and spaces removed, so ``Pleural_Other``, ``pleural other`` and
    ``Pleural-Other`` share one key.

    Args:
        name: Label or column name.

    Returns:
        The key.
    """
    return re.sub(r"[\s_\-]+", "", name).lower()


_LABEL_BY_KEY: dict[str, str] = {column_key(label): label for label in OPENI_LABELS}


def normalize_label_name(name: str) -> str:
    """Return the canonical (hyphenated) spelling of a label name.

    Args:
        name: A label spelled with hyphens, underscores or spaces in any case, e.g.
            ``"Pleural_Other"``, ``"pleural other"`` or ``"Lung-Opacity"``.

    Returns:
        The matching entry of :data:`OPENI_LABELS`.

    Raises:
        ValueError: If ``name`` is not one of the 14 labels.
    """
    label = _LABEL_BY_KEY.get(column_key(name))
    if label is None:
        raise ValueError(
            f"unknown label name {name!r}; use one of {list(OPENI_LABELS)} "
            "(hyphen, underscore and space spellings are accepted)"
        )
    return label


def normalize_label_names(names: Iterable[str]) -> list[str]:
    """Normalise several label names with :func:`normalize_label_name`, rejecting duplicates.

    Args:
        names: Label names in any accepted spelling.

    Returns:
        The canonical names, in the given order.

    Raises:
        ValueError: If a name is unknown or two names denote the same label.
    """
    result: list[str] = []
    for name in names:
        label = normalize_label_name(name)
        if label in result:
            raise ValueError(f"label {name!r} is listed twice (as {label!r}); list it once")
        result.append(label)
    return result


# ---------------------------------------------------------------------------------------------
# MeSH rule table
# ---------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    """Lower-case and collapse whitespace (the release has ``"Subcutaneous  Emphysema"``)."""
    return " ".join(text.split()).lower()


@dataclass(frozen=True)
class MeshRule:
    """One row of the MeSH → label table.

    Attributes:
        heading: MeSH main heading (text before the first ``/``), case-insensitive.
        label: The OpenI label set when the rule fires.
        qualifiers: When non-empty, at least one qualifier of the term must be in this set.
        exclude: The rule does not fire when any qualifier of the term is in this set.
    """

    heading: str
    label: str
    qualifiers: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def matches(self, heading: str, qualifiers: Sequence[str]) -> bool:
        """Return whether a normalised heading and its normalised qualifiers match this rule.

        Args:
            heading: The term's main heading, normalised with whitespace collapsed, lower case.
            qualifiers: The term's qualifiers (text after each ``/``), normalised likewise.

        Returns:
            ``True`` when the rule fires.
        """
        if heading != _norm(self.heading):
            return False
        if self.qualifiers and not any(q in self.qualifiers for q in qualifiers):
            return False
        return not any(q in self.exclude for q in qualifiers)


_NON_LUNG_SITES: tuple[str, ...] = (
    "ribs",
    "thoracic vertebrae",
    "adipose tissue",
    "breast",
    "clavicle",
    "sternum",
    "spine",
    "humerus",
    "shoulder",
)

MESH_RULES: tuple[MeshRule, ...] = (
    MeshRule("Pulmonary Atelectasis", "Atelectasis"),
    MeshRule("Atelectasis", "Atelectasis"),
    MeshRule("Atelectases", "Atelectasis"),
    MeshRule("Cardiomegaly", "Cardiomegaly"),
    MeshRule("Cardiac Shadow", "Cardiomegaly", qualifiers=("enlarged",)),
    MeshRule("Heart", "Cardiomegaly", qualifiers=("enlarged",)),
    MeshRule("Consolidation", "Consolidation"),
    MeshRule("Pulmonary Edema", "Edema"),
    MeshRule("Edema", "Edema"),
    MeshRule("Pulmonary Congestion", "Edema"),
    MeshRule("Heart Failure", "Edema"),
    MeshRule(
        "Mediastinum", "Enlarged-Cardiomediastinum", qualifiers=("prominent", "enlarged", "widened")
    ),
    MeshRule("Cardiomegaly", "Enlarged-Cardiomediastinum", qualifiers=("borderline",)),
    MeshRule("Cardiac Shadow", "Enlarged-Cardiomediastinum", qualifiers=("borderline",)),
    MeshRule("Fractures, Bone", "Fracture"),
    MeshRule("Fracture", "Fracture"),
    MeshRule("Fractures", "Fracture"),
    MeshRule("Nodule", "Lung-Lesion"),
    MeshRule("Cavitation", "Lung-Lesion"),
    MeshRule("Mass", "Lung-Lesion", qualifiers=("lung", "thorax", "right", "left")),
    MeshRule("Lung", "Lung-Lesion", qualifiers=("hypodense", "mass")),
    MeshRule("Opacity", "Lung-Opacity", exclude=_NON_LUNG_SITES),
    MeshRule("Infiltrate", "Lung-Opacity"),
    MeshRule("Airspace Disease", "Lung-Opacity"),
    MeshRule("Lung Diseases, Interstitial", "Lung-Opacity"),
    MeshRule("Density", "Lung-Opacity", qualifiers=("lung",)),
    MeshRule("Cicatrix", "Lung-Opacity", qualifiers=("lung",)),
    MeshRule("Pleural Effusion", "Pleural-Effusion"),
    MeshRule("Hemothorax", "Pleural-Effusion"),
    MeshRule("Hydropneumothorax", "Pleural-Effusion"),
    MeshRule("Hemopneumothorax", "Pleural-Effusion"),
    MeshRule("Pleural Diseases", "Pleural-Other"),
    MeshRule("Pleura", "Pleural-Other"),
    MeshRule("Thickening", "Pleural-Other", qualifiers=("pleura",)),
    MeshRule("Cicatrix", "Pleural-Other", qualifiers=("pleura",)),
    MeshRule("Costophrenic Angle", "Pleural-Other", qualifiers=("blunted",)),
    MeshRule("Pneumonia", "Pneumonia"),
    MeshRule("Pneumothorax", "Pneumothorax"),
    MeshRule("Hydropneumothorax", "Pneumothorax"),
    MeshRule("Hemopneumothorax", "Pneumothorax"),
    MeshRule("Catheters, Indwelling", "Support-Devices"),
    MeshRule("Implanted Medical Device", "Support-Devices"),
    MeshRule("Tube, Inserted", "Support-Devices"),
    MeshRule("Surgical Instruments", "Support-Devices"),
    MeshRule("Medical Device", "Support-Devices"),
    MeshRule("Stents", "Support-Devices"),
)
"""The MeSH → label rules; see the module docstring for the matching semantics."""

NORMAL_MESH_TERM: str = "normal"
"""The MeSH term the release uses for a normal study (→ No-Finding when nothing else fires)."""

NO_FINDING_LABEL: str = "No-Finding"


def split_mesh_term(term: str) -> tuple[str, list[str]]:
    """Split a MeSH term ``Heading/qualifier/...`` into its normalised heading and qualifiers.

    Args:
        term: A term such as ``"Opacity/lung/base/left/mild"``.

    Returns:
        ``(heading, qualifiers)``, lower case with whitespace collapsed, e.g.
        ``("opacity", ["lung", "base", "left", "mild"])``.
    """
    parts = [_norm(part) for part in term.split("/")]
    return parts[0], [part for part in parts[1:] if part]


def labels_for_mesh_term(term: str) -> set[str]:
    """Return the labels (excluding No-Finding) that one MeSH term maps to.

    Args:
        term: One ``<major>`` MeSH term.

    Returns:
        The set of matched label names; empty when no rule matches.
    """
    heading, qualifiers = split_mesh_term(term)
    return {rule.label for rule in MESH_RULES if rule.matches(heading, qualifiers)}


def labels_from_mesh(terms: Iterable[str], label_names: Sequence[str] = OPENI_LABELS) -> list[int]:
    """Derive a 0/1 label vector from a report's MeSH ``major`` terms.

    Args:
        terms: The report's MeSH terms (``<MeSH><major>`` entries).
        label_names: Labels to return, in order; any spelling accepted by
            :func:`normalize_label_name`. Defaults to all 14 :data:`OPENI_LABELS`.

    Returns:
        One ``0``/``1`` per entry of ``label_names``. ``No-Finding`` is ``1`` exactly when a term
        is ``normal`` and no other label fires.

    Raises:
        ValueError: If ``label_names`` holds an unknown label.
    """
    names = normalize_label_names(label_names)
    found: set[str] = set()
    normal = False
    for term in terms:
        if _norm(term) == NORMAL_MESH_TERM:
            normal = True
            continue
        found |= labels_for_mesh_term(term)
    if normal and not found:
        found.add(NO_FINDING_LABEL)
    return [int(name in found) for name in names]


def _describe_condition(rule: MeshRule) -> str:
    """Render the qualifier condition of a rule for the Markdown table."""
    parts = []
    if rule.qualifiers:
        parts.append("any of: " + ", ".join(f"`{q}`" for q in rule.qualifiers))
    if rule.exclude:
        parts.append("none of: " + ", ".join(f"`{q}`" for q in rule.exclude))
    return "; ".join(parts) if parts else "any"


def mesh_mapping_markdown() -> str:
    """Render :data:`MESH_RULES` (plus the No-Finding rule) as a Markdown table.

    Returns:
        A Markdown table with the columns MeSH heading, qualifier condition and label.
    """
    lines = [
        "| MeSH main heading | Qualifier condition | Label |",
        "|---|---|---|",
    ]
    for rule in MESH_RULES:
        lines.append(f"| {rule.heading} | {_describe_condition(rule)} | {rule.label} |")
    lines.append(f"| {NORMAL_MESH_TERM} | no other label fires | {NO_FINDING_LABEL} |")
    return "\n".join(lines) + "\n"


def _check_rules() -> None:
    """Fail at import time if the table names a label that is not one of the 14."""
    for rule in MESH_RULES:
        if rule.label not in OPENI_LABELS:  # pragma: no cover - guards edits of the table
            raise ValueError(f"MESH_RULES entry {rule} names unknown label {rule.label!r}")


_check_rules()

__all__ = [
    "MESH_RULES",
    "MONAI_COLUMN_NAMES",
    "NORMAL_MESH_TERM",
    "NO_FINDING_LABEL",
    "NUM_OPENI_LABELS",
    "OPENI_LABELS",
    "MeshRule",
    "column_key",
    "labels_for_mesh_term",
    "labels_from_mesh",
    "mesh_mapping_markdown",
    "normalize_label_name",
    "normalize_label_names",
    "split_mesh_term",
]
