"""`load_backbone`: a ViT of any family in `harness.families` by short name, HF id, `timm:` name,
folder, original `.pth`, or random test model."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import re
from dataclasses import replace
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
    AutoModel,
    CLIPVisionModelWithProjection,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PreTrainedModel,
)

from cls_decoupling.preparation import Preprocessing
from harness.backbone import BackboneInfo, DecomposingBackbone, HFDinov2
from harness.checkpoint import PLAIN_FAMILY, is_plain, load_original_checkpoint
from harness.errors import BackboneUnavailableError, UnknownBackboneError
from harness.families import Dinov2Family, Family, TimmFamily, family_for
from harness.positions import POS_INTERPOLATIONS, use_original_interpolation

log = logging.getLogger(__name__)

HUB_MODELS: dict[str, str] = {
    "dinov2_vits14": "facebook/dinov2-small",
    "dinov2_vitb14": "facebook/dinov2-base",
    "dinov2_vitl14": "facebook/dinov2-large",
    "dinov2_vitg14": "facebook/dinov2-giant",
    "dinov2_vits14_reg": "facebook/dinov2-with-registers-small",
    "dinov2_vitb14_reg": "facebook/dinov2-with-registers-base",
    "dinov2_vitl14_reg": "facebook/dinov2-with-registers-large",
    "dinov2_vitg14_reg": "facebook/dinov2-with-registers-giant",
    **{
        f"dinov3_{size}": f"facebook/dinov3-{size}-pretrain-lvd1689m"
        for size in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16")
    },
    "dinov3_vitl16_sat": "facebook/dinov3-vitl16-pretrain-sat493m",
    "dinov3_vit7b16_sat": "facebook/dinov3-vit7b16-pretrain-sat493m",
    "clip_vitb32": "openai/clip-vit-base-patch32",
    "clip_vitb16": "openai/clip-vit-base-patch16",
    "clip_vitl14": "openai/clip-vit-large-patch14",
    "clip_vitl14_336": "openai/clip-vit-large-patch14-336",
}
"""Short name (torch.hub's for DINOv2 and DINOv3; OpenAI's CLIP image towers) -> HF id
(docs/design.md#backbones)."""

_LOAD_AS: dict[str, type[PreTrainedModel]] = {
    "CLIPModel": CLIPVisionModelWithProjection,  # a whole CLIP: its image tower and projection
    "CLIPVisionModelWithProjection": CLIPVisionModelWithProjection,
}
"""transformers class to load a checkpoint with, by the architecture its config names (AutoModel
otherwise)."""

TIMM_PREFIX = "timm:"
"""`timm:<model>[.<tag>]`: a timm model with its pretrained weights (e.g.
`timm:deit3_base_patch16_224.fb_in22k_ft_in1k`, the paper's appendix DeiT III)."""
TIMM_HUB_ORG = "timm/"  # `timm/<model>.<tag>` on the hub is `timm:<model>.<tag>`
TIMM_CONFIG_KEY = "architecture"  # what marks a folder in timm's hub layout (config.json)
_TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

RANDOM_PREFIX = "random:"
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
            made by `save_pretrained` or in timm's hub layout, an original DINOv2 / DINO / iBOT
            `.pth`, or `random:<arch>[_reg]` (random weights; their numbers mean nothing).
        num_heads: heads of a `.pth` checkpoint when not width / 64 (test models only).
        pos_interpolation: how a DINOv2 position grid is resized for other image sizes: "original"
            (as the torch.hub models, `harness.positions`) or "hf" (as transformers). None: original
            for torch.hub names, `.pth` files and random models, hf for HF ids and folders. Other
            families resize as the model itself does (recorded as "hf", or "timm" for timm models).

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
    if source == "random":
        model = _random_model(name)
    elif source == "folder":
        timm_folder = is_timm_folder(location)
        model = _from_timm_folder(location, name) if timm_folder else _from_pretrained(location, name)
    elif source == "timm":
        model = _from_timm(location, name)
    elif source == "checkpoint":
        model = checkpoint = load_original_checkpoint(Path(location), num_heads)
    else:
        model = _from_hub(location, name)
    family = family_for(model)
    family_name = family.name
    if source == "checkpoint" and is_plain(checkpoint):
        family_name = PLAIN_FAMILY  # DINO v1 / iBOT: DINOv2's blocks with unit layer scale
    if family.name != Dinov2Family.name and pos_interpolation == "original":
        raise UnknownBackboneError(
            f"--pos-interpolation original is DINOv2's; {name!r} is a {family.name} model (its own resize)"
        )
    if pos_interpolation is None:
        original = source in ("random", "checkpoint") or name in HUB_MODELS
        pos_interpolation = "original" if original and family.name == Dinov2Family.name else "hf"
    if family.name == TimmFamily.name:
        pos_interpolation = "timm"  # the model's own resize (timm's resample_abs_pos_embed)
    if pos_interpolation == "original":
        use_original_interpolation(model)
    info = BackboneInfo(
        name=name,
        source=source,
        location=location,
        **family.architecture(),
        random_weights=source == "random",
        pos_interpolation=pos_interpolation,
        family=family_name,
        preprocessing=preprocessing_of(family, source, location),
    )
    if info.random_weights:
        log.warning("backbone %s has random weights: its numbers test the code, they mean nothing", name)
    # the tool's own copy of the weights: frozen, in eval mode (a model a caller hands to
    # `DecomposingBackbone.from_model` keeps its flags)
    return DecomposingBackbone(model.eval().requires_grad_(False), info)


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
    if name.startswith(TIMM_PREFIX):
        return "timm", _timm_name(name.removeprefix(TIMM_PREFIX))
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


def _from_hub(hub_id: str, name: str) -> torch.nn.Module:
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
        built = timm.create_model(model, pretrained=True, dynamic_img_size=True, **options)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, SafetensorError) as error:
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


def first_line(error: BaseException) -> str:
    """An exception's message in one line (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
        "or pass a local folder made by save_pretrained or an original dinov2_*_pretrain.pth file"
    )


def _from_pretrained(location: str, name: str, local_files_only: bool = False) -> torch.nn.Module:
    """An HF model of a supported family from the hub cache, the hub, or a local folder, with SDPA
    attention."""
    hub_logger = logging.getLogger("huggingface_hub")
    previous_level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # one clear line below instead of a retry log per attempt
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=local_files_only)
        architecture = (getattr(config, "architectures", None) or [""])[0]
        extra: dict[str, Any] = {}
        if config.model_type in ("vit", "deit"):  # ViT's / DeiT's tanh pooler: not the readout, not loaded
            extra["add_pooling_layer"] = False
        if architecture == "CLIPModel":  # the image tower's config, with the whole model's projection
            extra["config"] = config.vision_config
            extra["config"].projection_dim = config.projection_dim
        model = _LOAD_AS.get(architecture, AutoModel).from_pretrained(
            location, attn_implementation="sdpa", local_files_only=local_files_only, **extra
        )
    except OSError as error:
        raise BackboneUnavailableError(_unavailable_message(name, location, first_line(error))) from None
    except (ValueError, KeyError) as error:  # a config transformers does not know
        problem = first_line(error)
        raise UnknownBackboneError(f"{name!r} is not a model transformers can load: {problem}") from None
    finally:
        hub_logger.setLevel(previous_level)
    return _checked(model, name)


PROCESSOR_CONFIG = "preprocessor_config.json"
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes in transformers' processor configs


def preprocessing_of(family: Family, source: str, location: str) -> Preprocessing:
    """How the model's images are prepared: DINOv2's evaluation for DINOv2 (the paper's protocol, at
    any resolution); for another family its processor config where the checkpoint has one (a
    folder, or the hub), else the family's default (`Family.preprocessing`)."""
    settings = family.preprocessing
    if family.name == Dinov2Family.name:
        return settings
    if (own := family.own_preprocessing()) is not None:
        return own
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
    if path is None or not path.is_file():
        log.info("%s: no %s; the %s family's default preprocessing", location, PROCESSOR_CONFIG, family.name)
        return settings
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UnknownBackboneError(
            f"{path} is not a readable processor config: {first_line(error)}"
        ) from None
    return processor_settings(config, settings, str(path))


_SHORTEST_EDGE_PROCESSORS = ("CLIPImageProcessor", "CLIPImageProcessorFast", "BitImageProcessor")
"""Processors that read an integer `size` as the shorter side (transformers' `default_to_square=False`);
the others (ViT, DeiT) read it as a square."""


def processor_settings(config: dict[str, Any], defaults: Preprocessing, where: str) -> Preprocessing:
    """The preparation a transformers `preprocessor_config.json` describes, the family's `defaults`
    where it is silent.

    Raises:
        UnknownBackboneError: its mean / std are not 3 numbers each (stds positive).
    """
    settings: dict[str, Any] = {}
    if "image_mean" in config and "image_std" in config:
        mean, std = config["image_mean"], config["image_std"]
        if isinstance(mean, (int, float)):  # one number for every channel
            mean, std = [mean] * 3, [std] * 3
        lists = isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple))
        valid = (
            lists and len(mean) == len(std) == 3 and all(isinstance(v, (int, float)) for v in (*mean, *std))
        )
        if not valid or min(std) <= 0:
            raise UnknownBackboneError(
                f"{where}: image_mean / image_std must be 3 numbers each, got {mean}, {std}"
            )
        settings["mean"], settings["std"] = tuple(mean), tuple(std)
    resample = config.get("resample")
    if isinstance(resample, int) and resample in _RESAMPLE:
        settings["interpolation"] = _RESAMPLE[resample]
    square = config.get("image_processor_type") not in _SHORTEST_EDGE_PROCESSORS
    size, crop = config.get("size"), config.get("crop_size")
    if isinstance(size, int):  # the older form: transformers reads it as its processor does
        size = {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if not config.get("do_center_crop"):
        settings["resize"], settings["resize_ratio"] = "square", 1.0
    elif isinstance(size, dict) and isinstance(crop, dict) and "height" in crop:
        if "shortest_edge" in size:  # the shorter side, then a crop (CLIP)
            settings["resize"], settings["resize_ratio"] = (
                "shorter_crop",
                size["shortest_edge"] / crop["height"],
            )
        elif "height" in size:  # a square, then a crop (DeiT)
            settings["resize"], settings["resize_ratio"] = "square_crop", size["height"] / crop["height"]
    elif defaults.resize == "square":  # a crop of unknown size: the shorter side at the family's ratio
        settings["resize"] = "shorter_crop"
    return replace(defaults, **settings)


def _random_model(name: str) -> HFDinov2:
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
        "or an HF id (org/name), a local save_pretrained folder, or an original DINOv2 .pth file."
    )
