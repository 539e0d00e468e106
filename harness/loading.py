"""`load_backbone`: a ViT of any family in `harness.families` by short name, HF id, `timm:` name,
folder, original `.pth`, or random test model."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import re
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import get_session
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from common.preparation import Preprocessing
from harness.backbone import DecomposingBackbone
from harness.checkpoints import PLAIN_FAMILY, is_plain, load_original_checkpoint
from harness.choices import POS_INTERPOLATIONS, RANDOM_PREFIX
from harness.errors import (
    BackboneUnavailableError,
    CheckpointFormatError,
    UnknownBackboneError,
    first_line,
    state_dict_problem,
)
from harness.families import Family, family_for, load_as, short_names, unwrapped
from harness.info import BackboneInfo
from harness.positions import use_original_interpolation
from harness.processors import PROCESSOR_CONFIG

log = logging.getLogger(__name__)

HUB_MODELS: dict[str, str] = short_names()
"""Every family's short names (`Family.short_names`: torch.hub's for DINOv2 and DINOv3, OpenAI's CLIP
image towers) -> HF id (docs/design.md#backbones)."""

TIMM_PREFIX = "timm:"
"""`timm:<model>[.<tag>]`: a timm model with its pretrained weights (e.g.
`timm:deit3_base_patch16_224.fb_in22k_ft_in1k`, the paper's appendix DeiT III)."""
TIMM_HUB_ORG = "timm/"  # `timm/<model>.<tag>` on the hub is `timm:<model>.<tag>`
TIMM_CONFIG_KEY = "architecture"  # what marks a folder in timm's hub layout (config.json)
_TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

OPENCLIP_PREFIX = "open_clip:"
"""`open_clip:hf-hub:<org>/<repo>` or `open_clip:<model>@<pretrained tag or weights file>`: an open_clip
model with its weights (`open_clip.create_model`), read as its image tower."""
OPENCLIP_CONFIG = "open_clip_config.json"  # what marks a folder in open_clip's hub layout
_OPENCLIP_WEIGHTS = ("*.safetensors", "*.bin", "*.pth")

# (hidden, layers, heads, swiglu) of the released sizes; `tiny` is for tests and demos
_ARCHITECTURES: dict[str, tuple[int, int, int, bool]] = {
    "tiny": (64, 2, 4, False),
    "dinov2_vits14": (384, 12, 6, False),
    "dinov2_vitb14": (768, 12, 12, False),
    "dinov2_vitl14": (1024, 24, 16, False),
    "dinov2_vitg14": (1536, 40, 24, True),
}
RANDOM_MODELS: tuple[str, ...] = tuple(
    f"{RANDOM_PREFIX}{arch}{suffix}" for arch in _ARCHITECTURES for suffix in ("", "_reg")
)
"""Random-weight models with the released architectures: for tests and benchmarks only."""

_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_CHECKPOINT_SUFFIXES = (".pth", ".pt")


def load_backbone(
    name_or_path: str | Path, num_heads: int | None = None, pos_interpolation: str | None = None
) -> DecomposingBackbone:
    """Load a frozen ViT that decomposes its [CLS] output.

    Args:
        name_or_path: a short name of `HUB_MODELS` (`dinov2_vitg14_reg`, `dinov3_vitb16`,
            `clip_vitb16`), an HF id (`facebook/dinov2-small`), `timm:<model>[.<tag>]`, a folder
            made by `save_pretrained` or in timm's hub layout, an original DINOv2 / DINO / iBOT /
            DeiT III / DINOv3 `.pth` (`harness.checkpoints`), or `random:<arch>[_reg]` (random
            weights; their numbers mean nothing).
        num_heads: heads of a `.pth` checkpoint when not the released sizes' (test models only).
        pos_interpolation: how the position grid is resized for other image sizes: "original" (the
            authors' rule: DINOv2's torch.hub models, DINO v1, DeiT III; `harness.positions`) or "hf"
            (as transformers); None: the family's default (`Family.pos_interpolation`: DINOv2 original
            for torch.hub names, `.pth` files and random models, hf for HF ids and folders; DINO v1's
            `facebook/dino-vit*` and DeiT III's `.pth` original; other models resize as they do).

    Raises:
        UnknownBackboneError: the name is none of the above (or `pos_interpolation` is unknown);
            the message lists valid names.
        BackboneUnavailableError: the hub cannot be reached and the weights are not cached.
    """
    name = str(name_or_path)
    if pos_interpolation is not None and pos_interpolation not in POS_INTERPOLATIONS:
        raise UnknownBackboneError(
            f"unknown position interpolation {pos_interpolation!r}; "
            f"choose from {', '.join(POS_INTERPOLATIONS)}"
        )
    source, location = resolve_backbone(name)
    model: torch.nn.Module
    classifier: torch.nn.Linear | None = None  # an HF classifier checkpoint's, kept by its loader
    if source == "random":
        model = _random_model(name)
    elif source == "folder" and is_timm_folder(location):
        model = _from_timm_folder(location, name)
    elif source == "folder" and (Path(location) / OPENCLIP_CONFIG).is_file():
        model = _from_openclip(f"local-dir:{location}", name)
    elif source == "open_clip":
        model = _from_openclip(location, name)
    elif source == "folder":
        model, classifier = _from_pretrained(location, name)
    elif source == "timm":
        model = _from_timm(location, name)
    elif source == "checkpoint":
        model = load_original_checkpoint(Path(location), num_heads)
    else:
        model, classifier = _from_hub(location, name)
    family = family_for(model)
    if classifier is None:
        classifier = family.own_classifier()
    family_name = family.name
    if source == "checkpoint" and is_plain(model):
        family_name = PLAIN_FAMILY  # DINO v1 / iBOT: DINOv2's blocks with unit layer scale
    as_released = source in ("random", "checkpoint") or name in family.short_names
    try:
        pos_interpolation = family.pos_interpolation(pos_interpolation, as_released)
    except ValueError as error:
        raise UnknownBackboneError(f"{name!r}: {error}") from None
    if pos_interpolation == "original":
        use_original_interpolation(model)
    info = BackboneInfo(
        name=name,
        source=source,
        location=location,
        **family.described(),
        random_weights=source == "random",
        pos_interpolation=pos_interpolation,
        family=family_name,
        preprocessing=preparation_of(family, source, location),
        num_classes=0 if classifier is None else classifier.out_features,
    )
    if info.random_weights:
        log.warning("backbone %s has random weights: its numbers test the code, they mean nothing", name)
    # the tool's own copy of the weights: frozen, in eval mode (a model a caller hands to
    # `DecomposingBackbone.from_model` keeps its flags)
    return DecomposingBackbone(model.eval().requires_grad_(False), info, classifier=classifier)


def resolve_backbone(name: str) -> tuple[str, str]:
    """Where a backbone name points, without loading anything: (source, location), source one of
    "random", "folder", "checkpoint", "hub", "timm"; location the resolved path, HF id or timm name
    ("" for random).

    Raises:
        UnknownBackboneError: the name is no known name, existing folder or `.pth` file, or HF id.
    """
    path = Path(name).expanduser()
    if name.startswith(RANDOM_PREFIX):
        if name not in RANDOM_MODELS:
            raise UnknownBackboneError(_unknown_message(name))
        return "random", ""
    if name.startswith(TIMM_PREFIX) or HUB_MODELS.get(name, "").startswith(TIMM_PREFIX):
        return "timm", _timm_name(HUB_MODELS.get(name, name).removeprefix(TIMM_PREFIX))
    if name.startswith(OPENCLIP_PREFIX) or HUB_MODELS.get(name, "").startswith(OPENCLIP_PREFIX):
        return "open_clip", _openclip_name(HUB_MODELS.get(name, name).removeprefix(OPENCLIP_PREFIX))
    if name.startswith(TIMM_HUB_ORG) and not path.exists():  # timm's own hub copy: the same model
        return "timm", _timm_name(name.removeprefix(TIMM_HUB_ORG))
    if path.is_dir():
        return "folder", str(path.resolve())
    if path.is_file():
        if path.suffix not in _CHECKPOINT_SUFFIXES:
            raise UnknownBackboneError(
                f"{name} is a file but not a .pth checkpoint; expected {_CHECKPOINT_SUFFIXES}"
            )
        return "checkpoint", str(path.resolve())
    if path.suffix in _CHECKPOINT_SUFFIXES:
        raise UnknownBackboneError(f"no checkpoint file {path} (it does not exist)")
    if name in HUB_MODELS:
        return "hub", HUB_MODELS[name]
    if _HF_ID.match(name) and not name.startswith("."):
        return "hub", name
    raise UnknownBackboneError(_unknown_message(name))


def _from_hub(hub_id: str, name: str) -> tuple[torch.nn.Module, torch.nn.Linear | None]:
    """An HF model from the local cache when it is there (no network at all), else from the hub.

    An unreachable hub is reported after one request, instead of after huggingface_hub's
    retries (about 25 s).
    """
    try:
        return _from_pretrained(hub_id, name, local_files_only=True)
    except BackboneUnavailableError:
        pass  # not cached: download
    if not hf_constants.HF_HUB_OFFLINE and (problem := _hub_unreachable()):
        raise BackboneUnavailableError(_unavailable_message(name, hub_id, problem))
    return _from_pretrained(hub_id, name)


def _openclip_name(spec: str) -> str:
    """An open_clip model spec, `hf-hub:<org>/<repo>` or `<model>@<tag or file>`, checked for form.

    Raises:
        UnknownBackboneError: neither form, or a model open_clip does not know.
    """
    if spec.startswith("hf-hub:") and _HF_ID.match(spec.removeprefix("hf-hub:")):
        return spec
    model, _, weights = spec.partition("@")
    if not weights:
        raise UnknownBackboneError(
            f"open_clip:{spec}: name the weights, open_clip:{model}@<pretrained tag or file> (see "
            "open_clip.list_pretrained()) or open_clip:hf-hub:<org>/<repo>"
        )
    open_clip = _openclip()
    if model not in open_clip.list_models():
        closest = difflib.get_close_matches(model, open_clip.list_models(), n=1)
        hint = f" Did you mean {closest[0]!r}?" if closest else ""
        raise UnknownBackboneError(f"open_clip has no model {model!r}.{hint} (see open_clip.list_models())")
    return spec


def _openclip() -> Any:
    """The open_clip package (`pip install open_clip_torch`), or one line saying how to get it."""
    try:
        import open_clip
    except ImportError:
        raise UnknownBackboneError(
            "open_clip models need open_clip: pip install open_clip_torch (or '.[openclip]')"
        ) from None
    return open_clip


def _from_openclip(spec: str, name: str) -> torch.nn.Module:
    """The image tower of an open_clip model: `hf-hub:` from the HF cache (no network) or the hub,
    `local-dir:` from a folder in open_clip's hub layout, `<model>@<tag or file>` as open_clip
    resolves it; weights read weights-only, a folder without weights or an unreachable hub one line."""
    open_clip = _openclip()
    if spec.startswith("local-dir:"):
        folder = Path(spec.removeprefix("local-dir:"))
        if not any(found for pattern in _OPENCLIP_WEIGHTS for found in folder.glob(pattern)):
            raise CheckpointFormatError(f"{name!r}: {folder} holds {OPENCLIP_CONFIG} but no weights file")
    if spec.startswith("hf-hub:"):
        hub_id = spec.removeprefix("hf-hub:")
        cached = isinstance(try_to_load_from_cache(hub_id, OPENCLIP_CONFIG), str)
        if not cached and (hf_constants.HF_HUB_OFFLINE or (problem := _hub_unreachable())):
            reason = "offline (HF_HUB_OFFLINE)" if hf_constants.HF_HUB_OFFLINE else problem
            raise BackboneUnavailableError(_unavailable_message(name, hub_id, str(reason)))
    schema = spec.startswith(("hf-hub:", "local-dir:"))  # the weights come with the name
    model, _, weights = (spec, "", "") if schema else spec.partition("@")
    try:
        built = open_clip.create_model(
            model, pretrained=weights or None, weights_only=True, require_pretrained=True
        )
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        raise UnknownBackboneError(f"{name!r}: open_clip cannot load it: {first_line(error)}") from None
    try:
        visual, _ = unwrapped(built.visual)  # a timm tower: its trunk
    except ValueError as error:
        raise UnknownBackboneError(f"{name!r}: {error}") from None
    return _checked(visual, name)


def _timm_name(model: str) -> str:
    """A timm model name with a pretrained tag, as timm knows it.

    Raises:
        UnknownBackboneError: timm has no such model (the message suggests the closest).
    """
    with contextlib.suppress(RuntimeError):  # an unknown tag of a known architecture
        if timm.is_model(model) and timm.models.get_pretrained_cfg(model) is not None:
            return model
    names = timm.list_pretrained()
    closest = [n for n in names if n.startswith(model)][:1] or difflib.get_close_matches(model, names, n=1)
    hint = f" Did you mean 'timm:{closest[0]}'?" if closest else ""
    raise UnknownBackboneError(f"timm has no pretrained model {model!r}.{hint} (see timm.list_pretrained())")


def is_timm_folder(folder: str | Path) -> bool:
    """A folder in timm's hub layout (save_for_hf): its config.json names the `architecture`."""
    config = Path(folder) / "config.json"
    with contextlib.suppress(OSError, ValueError):
        return TIMM_CONFIG_KEY in json.loads(config.read_text())
    return False


def _from_timm(model: str, name: str) -> torch.nn.Module:
    """A timm model with its pretrained weights from the HF cache (no network) or the hub."""
    config = timm.models.get_pretrained_cfg(model)
    hub_id = config.hf_hub_id if config is not None else None
    if not hub_id:
        raise BackboneUnavailableError(f"cannot load {name!r}: timm keeps its weights outside the HF hub")
    offline = hf_constants.HF_HUB_OFFLINE
    file = _cached_file(hub_id)
    if file is None:
        if not offline and (problem := _hub_unreachable()):
            raise BackboneUnavailableError(_unavailable_message(name, hub_id, problem))
        file = _downloaded_file(hub_id, name)
    return _created_timm(name, model, pretrained_cfg_overlay={"file": file})


def _cached_file(hub_id: str) -> str | None:
    """The weights of `hub_id` in the HF cache (a file lookup: no request at all), or None."""
    for filename in _TIMM_WEIGHTS:
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _downloaded_file(hub_id: str, name: str) -> str:
    reason = "offline (HF_HUB_OFFLINE)"
    if not hf_constants.HF_HUB_OFFLINE:
        for filename in _TIMM_WEIGHTS:
            try:
                return hf_hub_download(hub_id, filename)
            except Exception as error:
                reason = first_line(error)
    raise BackboneUnavailableError(_unavailable_message(name, hub_id, reason))


def _from_timm_folder(folder: str, name: str) -> torch.nn.Module:
    """A timm model from a folder in timm's hub layout (config.json, model.safetensors)."""
    return _created_timm(name, f"local-dir:{folder}")


def _created_timm(name: str, model: str, **options: Any) -> torch.nn.Module:
    """`timm.create_model(model)` with its weights, any image size; a file timm cannot read, or a model
    no family reads, is one line."""
    try:
        try:
            built = timm.create_model(model, pretrained=True, dynamic_img_size=True, **options)
        except TypeError as error:  # NaFlexVit resizes its positions itself: it takes no such option
            if "dynamic_img_size" not in str(error):
                raise
            built = timm.create_model(model, pretrained=True, **options)
    except RuntimeError as error:
        if "state_dict" not in str(error):
            raise UnknownBackboneError(f"{name!r}: timm cannot load it: {first_line(error)}") from None
        # timm loads strictly: tensors missing, unexpected or misshapen
        problem = state_dict_problem(error)
        raise CheckpointFormatError(
            f"{name!r}: its weights do not fit the model its config describes: {problem}"
        ) from None
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as error:
        # TypeError: not a ViT (no dynamic_img_size); SafetensorError: a truncated weight file
        raise UnknownBackboneError(f"{name!r}: timm cannot load it: {first_line(error)}") from None
    return _checked(built, name)


def _checked(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """`model` if a family of harness.families reads it, else one line naming what is supported."""
    try:
        family_for(model)
    except ValueError as error:
        raise UnknownBackboneError(f"{name!r}: {error}") from None
    return model


def _hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached (one HEAD request through huggingface_hub's own session, so
    its proxy settings apply; no retries), or None when it answers at all."""
    try:
        get_session().head(hf_constants.ENDPOINT, timeout=timeout)
    except Exception as error:  # DNS, refused, timeout, proxy, TLS: all mean "unreachable"
        return f"{hf_constants.ENDPOINT} did not answer ({type(error).__name__}: {error})"
    return None


def _unavailable_message(name: str, location: str, reason: str) -> str:
    return (
        f"cannot load {name!r} ({location}): {reason} -- the Hugging Face hub is unreachable or the "
        "weights are not cached; download them where the hub is reachable (they land in HF_HOME), "
        "or pass a local folder made by save_pretrained or the authors' .pth file"
    )


def _from_pretrained(
    location: str, name: str, local_files_only: bool = False
) -> tuple[torch.nn.Module, torch.nn.Linear | None]:
    """An HF model of a supported family from the hub cache, the hub, or a local folder, with SDPA
    attention, every tensor of the model read from the checkpoint (`_check_fit`); with the
    classifier on its [CLS] readout where the checkpoint is a classifier its family keeps
    (`LoadAs.classifier`), else None."""
    quiet = [logging.getLogger(logger) for logger in ("huggingface_hub", "transformers")]
    previous = [logger.level for logger in quiet]
    for logger in quiet:  # one clear line below instead of retry logs and transformers' load report
        logger.setLevel(logging.ERROR)
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=local_files_only)
        how = load_as(config)  # the class and arguments its family loads it with
        model, report = how.model_class.from_pretrained(
            location,
            attn_implementation="sdpa",
            local_files_only=local_files_only,
            ignore_mismatched_sizes=True,  # reported, then refused by _check_fit with their names
            output_loading_info=True,
            **how.arguments,
        )
    except OSError as error:
        raise BackboneUnavailableError(_unavailable_message(name, location, first_line(error))) from None
    except (ValueError, KeyError) as error:  # a config transformers does not know
        problem = first_line(error)
        raise UnknownBackboneError(f"{name!r} is not a model transformers can load: {problem}") from None
    except (SafetensorError, RuntimeError) as error:  # a truncated or damaged weight file
        raise CheckpointFormatError(f"{name!r}: cannot read its weights: {first_line(error)}") from None
    finally:
        for logger, level in zip(quiet, previous, strict=True):
            logger.setLevel(level)
    _check_fit(name, report, how.left_out)
    classifier = getattr(model, how.classifier).requires_grad_(False) if how.classifier else None
    if how.inner:
        model = getattr(model, how.inner)
    return _checked(model, name), classifier


def _check_fit(name: str, report: dict[str, Any], left_out: tuple[str, ...] = ()) -> None:
    """Refuse weights that leave part of the model at random initialisation: tensors the model has
    and the checkpoint lacks (missing), or of another shape (mismatched), or tensors of the checkpoint
    the model does not have (unexpected: another architecture, a wrapper's prefix), apart from
    those its family leaves out on purpose (`LoadAs.left_out`)."""
    missing = sorted(report.get("missing_keys", ()))
    unexpected = sorted(key for key in report.get("unexpected_keys", ()) if not key.startswith(left_out))
    mismatched = sorted(_shapes(item) for item in report.get("mismatched_keys", ()))
    if not (missing or unexpected or mismatched):
        return
    if missing and unexpected and (prefix := _wrapper_prefix(missing, unexpected)):
        raise CheckpointFormatError(
            f"{name!r}: its weights do not fit the model its config describes: every tensor is named "
            f"under {prefix!r} (a wrapper's prefix; e.g. "
            f"{unexpected[0]!r} for {missing[0]!r}): save the inner model itself (`save_pretrained` of "
            "the module under that prefix) and load that folder"
        )
    found = [
        f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched))
        if keys
    ]
    raise CheckpointFormatError(
        f"{name!r}: its weights do not fit the model its config describes: {'; '.join(found)}; "
        "loading it would leave those parts at random initialisation (was it saved from another "
        "architecture or a changed config?)"
    )


def _shapes(mismatch: Any) -> str:
    """A mismatched tensor as transformers reports it (name, checkpoint shape, model shape), in words."""
    if isinstance(mismatch, tuple) and len(mismatch) == 3:
        key, checkpoint, model = mismatch
        return f"{key} (checkpoint {list(checkpoint)}, model {list(model)})"
    return str(mismatch)


def _wrapper_prefix(missing: list[str], unexpected: list[str]) -> str | None:
    """The prefix (e.g. `backbone.`, `module.`) that turns the unexpected tensor names into the
    missing ones, when one does."""
    first = unexpected[0]
    for cut in range(first.find(".") + 1, len(first)):
        if first[cut - 1] != ".":
            continue
        prefix = first[:cut]
        if all(key.startswith(prefix) for key in unexpected) and set(missing) <= {
            key.removeprefix(prefix) for key in unexpected
        }:
            return prefix
    return None


def preparation_of(family: Family, source: str, location: str) -> Preprocessing:
    """How the model's images are prepared (`Family.preparation`), with the checkpoint's processor
    config where the family reads one (`Family.reads_processor_config`) and the checkpoint has one
    (a folder, or the hub); the family's default otherwise.

    Raises:
        UnknownBackboneError: the processor config is not JSON, or its mean / std are invalid.
    """
    if not family.reads_processor_config:
        return family.preparation()
    path = _processor_config_file(source, location)
    if path is None:
        log.info("%s: no %s; the %s family's default preprocessing", location, PROCESSOR_CONFIG, family.name)
        return family.preparation()
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UnknownBackboneError(
            f"{path} is not a readable processor config: {first_line(error)}"
        ) from None
    if not isinstance(config, dict):
        raise UnknownBackboneError(f"{path} is not a readable processor config: not a JSON object")
    try:
        return family.preparation(config)
    except ValueError as error:
        raise UnknownBackboneError(f"{path}: {error}") from None


def _processor_config_file(source: str, location: str) -> Path | None:
    """The checkpoint's `preprocessor_config.json`: in its folder, or from the hub (the cache first, a
    file lookup; not cached and no hub: None)."""
    path: Path | None = None
    if source == "folder":
        path = Path(location) / PROCESSOR_CONFIG
    elif source == "hub":
        cached = try_to_load_from_cache(location, PROCESSOR_CONFIG)  # a file lookup, no request
        if isinstance(cached, str):
            path = Path(cached)
        else:
            with contextlib.suppress(Exception):  # not cached and no hub: the family's default
                offline = _hub_unreachable() is not None
                path = Path(hf_hub_download(location, PROCESSOR_CONFIG, local_files_only=offline))
    return path if path is not None and path.is_file() else None


def _random_model(name: str) -> Dinov2Model | Dinov2WithRegistersModel:
    """A seeded random-weight DINOv2 of one of the released architectures (or `tiny`)."""
    arch = name.removeprefix(RANDOM_PREFIX)
    registers = arch.endswith("_reg")
    hidden, layers, heads, swiglu = _ARCHITECTURES[arch.removesuffix("_reg")]
    common: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        use_swiglu_ffn=swiglu,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if registers:
            return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **common))
        return Dinov2Model(Dinov2Config(**common))


def _unknown_message(name: str) -> str:
    valid = [*HUB_MODELS, *RANDOM_MODELS]
    closest = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    return (
        f"unknown backbone {name!r}.{hint} Valid names: {', '.join(valid)}; "
        "or an HF id (org/name), a local save_pretrained folder, or an original .pth (DINOv2, DINO, iBOT, "
        "DeiT III, DINOv3)."
    )
