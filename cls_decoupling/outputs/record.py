"""What results.json holds, typed and versioned (docs/design.md#outputs): one `RunRecord` that a run
with the backbone and a replay from saved features both build, that writing, `--from-features` and
the comparison read back.

results.json keeps the layout it had before the schema was versioned (`backbone`, `data`, `run`,
`results`); files without `schema_version` were written by those versions and read as version 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import UserError
from harness import BackboneInfo

SCHEMA_VERSION = 1
"""The version of results.json this code writes (and the newest it reads)."""


@dataclass(frozen=True, kw_only=True)
class DataRecord:
    """The evaluated data: what the data module describes (`ImageDataModule.describe`), then what the
    run counted. Field order is results.json's key order."""

    source: str
    data_dir: str | None = None
    split: str | None = "val"
    """The split read (None: a saved Hugging Face dataset of one unnamed split)."""
    hf: Mapping[str, Any] | None = None
    """--data hf: the dataset read (its path or name), its kind (saved, parquet, folder, name), split,
    image and label columns, streaming and the split's rows (`hf_images`; written only then)."""
    files: int = 0
    skipped_run_folders: tuple[str, ...] = ()
    """Run or comparison folders of this tool found among the data and left out of its files
    (written only when there are some)."""
    labelled: bool = False
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    resolution: int = 224
    limit: int | None = None
    per_class: int | None = None
    fast_jpeg: bool = False
    resize: str | None = None
    """--resize, where one was asked (written only then; `preprocessing` is what ran)."""
    crop_ratio: float | None = None
    """--crop-ratio, where one was asked (written only then)."""
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    num_images: int = 0
    repeated_images: int = 0
    num_skipped: int = 0
    skipped: tuple[tuple[int, str], ...] = ()
    """(dataset index, reason) of every file that could not be read."""
    train: Mapping[str, Any] | None = None
    """The k-NN bank's training data (its description, `num_images`, `num_skipped`), when one was built."""
    from_features: str | None = None
    """The run folder whose saved features a replay read (None for a run with the backbone)."""

    @classmethod
    def counted(
        cls, description: Mapping[str, Any], num_images: int, repeated_images: int,
        skipped: Sequence[tuple[int, str]], train: Mapping[str, Any] | None = None,
    ) -> DataRecord:  # fmt: skip
        """The record of a run: the data module's description and what the run counted."""
        return cls(
            **_known(cls, description), num_images=num_images, repeated_images=repeated_images,
            num_skipped=len(skipped), skipped=tuple(skipped), train=train,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        data = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        data["class_names"] = list(self.class_names)
        data["skipped_run_folders"] = list(self.skipped_run_folders)
        data["preprocessing"] = dict(self.preprocessing)
        data["skipped"] = [{"index": index, "reason": reason} for index, reason in self.skipped]
        data["hf"] = None if self.hf is None else dict(self.hf)
        optional = ("hf", "skipped_run_folders", "resize", "crop_ratio", "train", "from_features")
        return {key: value for key, value in data.items() if key not in optional or value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataRecord:
        known = _known(cls, data)
        known["class_names"] = tuple(data.get("class_names", ()))
        known["skipped_run_folders"] = tuple(data.get("skipped_run_folders", ()))
        known["skipped"] = tuple(
            (int(item["index"]), str(item["reason"])) for item in data.get("skipped", ())
        )
        return cls(**known)


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How the probes ran. A replay from saved features has no backbone pass: the fields marked
    "backbone pass" are None there and not written. Field order is results.json's key order."""

    probes: tuple[str, ...]
    skipped_probes: Mapping[str, str] = field(default_factory=dict)
    precision: str | None = None  # backbone pass: what ran (16-mixed on a CPU runs as bf16-mixed)
    world_size: int | None = None  # backbone pass
    batch_size: int | None = None  # backbone pass
    episodes: int = 10
    shots: int = 1
    seed: int | None = None  # the probes' seed (episodes, ridge split); a replay's may differ from data.seed
    head: str | None = None  # backbone pass: the linear head's path (None: ridge classifier)
    seconds: float = 0.0
    timings: Mapping[str, float] | None = None  # backbone pass: seconds per phase
    compile: str | None = None  # backbone pass: the torch.compile backend (None: eager)
    layers: tuple[int, ...] = ()
    max_pooler_error: float | None = None  # backbone pass
    torch: str = ""
    interventions: tuple[str, ...] = ()  # backbone pass: `Intervention.name` of each --intervene
    intervention_blocks: Mapping[str, Sequence[int]] = field(default_factory=dict)  # name -> its blocks
    skipped_interventions: Mapping[str, str] = field(default_factory=dict)  # name -> why (backbone pass)
    reference: Mapping[str, Any] | None = None  # backbone pass: the reference images' description
    test_time_registers: Mapping[str, Any] | None = None  # backbone pass: their count and neurons
    explained_class: str | None = None  # backbone pass: what the attribution maps explain (its runs only)

    BACKBONE_PASS = (
        "precision",
        "world_size",
        "batch_size",
        "head",
        "timings",
        "compile",
        "max_pooler_error",
        "interventions",
        "intervention_blocks",
        "skipped_interventions",
        "reference",
        "test_time_registers",
        "explained_class",
    )

    def as_dict(self, replayed: bool = False) -> dict[str, Any]:
        data = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        data |= {
            "probes": list(self.probes),
            "layers": list(self.layers),
            "skipped_probes": dict(self.skipped_probes),
            "interventions": list(self.interventions),
            "intervention_blocks": {name: list(blocks) for name, blocks in self.intervention_blocks.items()},
            "skipped_interventions": dict(self.skipped_interventions),
        }
        if not self.interventions and not self.skipped_interventions:  # written only when asked
            del data["interventions"], data["skipped_interventions"], data["reference"]
            del data["intervention_blocks"]
        if self.test_time_registers is None:  # written only when asked
            del data["test_time_registers"]
        if self.explained_class is None:  # written only with the attribution probe
            del data["explained_class"]
        if self.seed is None:  # records written before it was
            del data["seed"]
        if self.timings is not None:
            data["timings"] = dict(self.timings)
        return {key: value for key, value in data.items() if not (replayed and key in self.BACKBONE_PASS)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSettings:
        known = _known(cls, data)
        known["probes"] = tuple(data.get("probes", ()))
        known["layers"] = tuple(int(layer) for layer in data.get("layers", ()))
        known["interventions"] = tuple(data.get("interventions", ()))
        return cls(**known)


@dataclass(frozen=True)
class RunRecord:
    """Everything results.json holds: the backbone, the data, the run settings and the probes'
    results (name -> value, docs/design.md#names; NaN where undefined)."""

    backbone: BackboneInfo
    data: DataRecord
    run: RunSettings
    results: Mapping[str, float]
    schema_version: int = SCHEMA_VERSION

    @property
    def replayed(self) -> bool:
        """Whether the probes ran on saved features instead of a backbone pass."""
        return self.data.from_features is not None

    def as_dict(self) -> dict[str, Any]:
        """results.json's content (before `strict_json` writes undefined numbers as null)."""
        return {
            "schema_version": self.schema_version,
            "backbone": self.backbone.as_dict(),
            "data": self.data.as_dict(),
            "run": self.run.as_dict(replayed=self.replayed),
            "results": dict(self.results),
        }

    @classmethod
    def from_dict(cls, summary: Mapping[str, Any], where: str = "results.json") -> RunRecord:
        """A record read back (version 1, or the unversioned layout of earlier versions).

        Raises:
            UserError: a newer schema, or a file that is not a run's results.json.
        """
        if not isinstance(summary, Mapping):
            raise UserError(
                f"{where} is not a results.json of evaluate.py (it holds a {type(summary).__name__})"
            )
        version = summary.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UserError(
                f"{where} has schema version {version}; this version reads up to {SCHEMA_VERSION}: "
                "update cls-decoupling to read it"
            )
        try:
            record = cls(
                BackboneInfo.from_dict(summary["backbone"]),
                DataRecord.from_dict(summary["data"]),
                RunSettings.from_dict(summary["run"]),
                dict(summary["results"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"{where} is not a results.json of evaluate.py ({type(error).__name__}: {error})"
            ) from None
        if wrong := next(
            ((name, value) for name, value in record.results.items() if not _is_number(value)), None
        ):
            raise UserError(
                f"{where}: the result {wrong[0]!r} is {wrong[1]!r}, not a number (was it edited?)"
            )
        return record


def _known(kind: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of the dataclass `kind` (keys it does not know are left:
    results.json of earlier versions held a few more)."""
    names = {item.name for item in dataclasses.fields(kind)}
    return {key: value for key, value in data.items() if key in names}


def _is_number(value: object) -> bool:
    """A result value as results.json holds one: a number (NaN where undefined), not a bool or text."""
    return isinstance(value, int | float) and not isinstance(value, bool)
