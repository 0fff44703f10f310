"""The one image preprocessing shared by head labelling and inference.

Labelling and inference must feed an expert exactly the same tensors, so both call
`preprocess(images, spec)` with the `InputSpec` stored next to the expert's weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mllgraph.errors import InvalidArgument

if TYPE_CHECKING:  # torch is imported where images are preprocessed: the catalogue and
    import torch  # selection import this module for InputSpec alone, and start faster without

RESIZE_MODES: tuple[str, ...] = ("resize", "resize_crop")
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic", "nearest")
MIN_SIZE, MAX_SIZE = 8, 1024

# ITU-R BT.601 luma weights, the same PIL uses for RGB -> "L".
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What an expert expects as input: a square `size`x`size` image with `channels`.

    resize: "resize" scales the whole image to size x size (aspect not kept);
    "resize_crop" scales the shorter side to floor(size / crop_pct), then takes the
    centre size x size crop. Pixels are scaled to [0, 1], then (x - mean) / std.
    """

    size: int
    resize: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so the spec stays hashable and immutable.
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def validate(self) -> InputSpec:
        """Raise InvalidArgument naming the first bad field; return self when valid."""
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InvalidArgument(f"input_spec.size must be an int, got {self.size!r}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InvalidArgument(
                f"input_spec.size must be in {MIN_SIZE}..{MAX_SIZE}, got {self.size}"
            )
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise InvalidArgument(f"input_spec.channels must be 1 or 3, got {self.channels!r}")
        if self.resize not in RESIZE_MODES:
            raise InvalidArgument(
                f"input_spec.resize must be one of {list(RESIZE_MODES)}, got {self.resize!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise InvalidArgument(
                f"input_spec.interpolation must be one of {list(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if (
            isinstance(self.crop_pct, bool)
            or not isinstance(self.crop_pct, int | float)
            or not 0.0 < self.crop_pct <= 1.0
        ):
            raise InvalidArgument(f"input_spec.crop_pct must be in (0, 1], got {self.crop_pct!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            ):
                raise InvalidArgument(
                    f"input_spec.{name} must be a list of finite numbers, got {value!r}"
                )
            if len(value) != self.channels:
                raise InvalidArgument(
                    f"input_spec.{name} has {len(value)} values but channels is {self.channels}"
                )
        if any(v <= 0 for v in self.std):
            raise InvalidArgument(f"input_spec.std must be > 0 everywhere, got {self.std!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["mean"] = [float(v) for v in self.mean]
        d["std"] = [float(v) for v in self.std]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Build and validate a spec from `to_dict()` output (e.g. parsed JSON)."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"input_spec must be an object, got {type(data).__name__}")
        known = {"size", "resize", "mean", "std", "channels", "crop_pct", "interpolation"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"input_spec has unknown field(s) {unknown}")
        missing = sorted({"size", "resize", "mean", "std", "channels"} - set(data))
        if missing:
            raise InvalidArgument(f"input_spec is missing field(s) {missing}")
        kwargs = dict(data)
        for name in ("mean", "std"):
            if isinstance(kwargs[name], list | tuple):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs).validate()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESIZE = "resize_crop"
DEFAULT_CROP_PCT = 0.875  # resize_crop without a stated crop (timm's usual)
DEFAULT_INTERPOLATION = "bilinear"


def arch_defaults(arch: str) -> dict[str, Any]:
    """The input settings timm's pretrained config states for `arch` (metadata only, no
    download): size, interpolation (one of INTERPOLATIONS), crop_pct, mean and std; {} when
    timm has none (or `arch` is no timm model)."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(arch) if arch and timm.is_model(arch) else None
    except Exception:  # noqa: BLE001 - defaults are a convenience; validation comes later
        cfg = None
    if cfg is None:
        return {}
    out: dict[str, Any] = {}
    if cfg.input_size:
        out["size"] = int(cfg.input_size[-1])
    if cfg.interpolation in INTERPOLATIONS:
        out["interpolation"] = cfg.interpolation
    if cfg.crop_pct:
        out["crop_pct"] = float(cfg.crop_pct)
    if cfg.mean and len(cfg.mean) == 3:
        out["mean"], out["std"] = tuple(cfg.mean), tuple(cfg.std)
    return out


def complete_spec(
    arch: str = "",
    *,
    base: InputSpec | None = None,
    size: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize: str | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> InputSpec:
    """The input spec of a registration from the fields a caller gave (None: not given).

    The one place unset fields get their defaults, for every way of registering (the
    service's RegisterModel, `mllgraph models register` locally or through a service), so
    the same weights and flags give the same spec whichever way they come: a field given
    wins; else `base`'s (a builtin's own spec); else what timm's pretrained config states for
    `arch` (size, interpolation, crop_pct, mean and std); else resize_crop with crop_pct
    0.875 (1.0 for plain resize), bilinear, ImageNet statistics (averaged for one channel).
    Raises InvalidArgument naming the first bad field.
    """
    channels = channels or (base.channels if base else 3)
    stated = {} if base else arch_defaults(arch)
    size = size or (base.size if base else stated.get("size", 0))
    if not size:
        raise InvalidArgument(f"input_spec.size: required (arch {arch!r} has no default size)")
    resize = resize or (base.resize if base else DEFAULT_RESIZE)
    if crop_pct is None:
        if base:
            crop_pct = base.crop_pct
        else:
            crop_pct = stated.get("crop_pct", DEFAULT_CROP_PCT) if resize == "resize_crop" else 1.0

    def stats(given: Sequence[float] | None, name: str, imagenet: tuple[float, ...]) -> tuple:
        if given:
            return tuple(given)
        if base and base.channels == channels:
            return tuple(getattr(base, name))
        values = tuple(stated.get(name, imagenet))
        return values if channels == 3 else (round(sum(values) / len(values), 4),)

    interpolation = interpolation or (
        base.interpolation if base else stated.get("interpolation", DEFAULT_INTERPOLATION)
    )
    return InputSpec(
        size=size,
        resize=resize,
        crop_pct=crop_pct,
        mean=stats(mean, "mean", IMAGENET_MEAN),
        std=stats(std, "std", IMAGENET_STD),
        channels=channels,
        interpolation=interpolation,
    ).validate()


def _as_image_groups(images: np.ndarray | Sequence[np.ndarray]) -> tuple[int, list[tuple]]:
    """Group images by shape: returns (count, [(indices, uint8 array (n, H, W, C))])."""
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise InvalidArgument(
                f"images must be a uint8 batch (N, H, W) or (N, H, W, 3), got shape {images.shape}"
            )
        if arr.dtype != np.uint8:
            raise InvalidArgument(f"images must have dtype uint8, got {arr.dtype}")
        return arr.shape[0], [(None, arr)]

    if not isinstance(images, Sequence) or isinstance(images, str | bytes):
        raise InvalidArgument(
            f"images must be a numpy array or a list of arrays, got {type(images).__name__}"
        )
    groups: dict[tuple[int, ...], list[int]] = {}
    items: list[np.ndarray] = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray):
            raise InvalidArgument(f"images[{i}] must be a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise InvalidArgument(f"images[{i}] must have dtype uint8, got {img.dtype}")
        if img.ndim == 2:
            img = img[..., None]
        elif img.ndim == 3 and img.shape[-1] == 4:
            img = img[..., :3]  # RGBA: the alpha channel carries no class evidence
        if img.ndim != 3 or img.shape[-1] not in (1, 3) or min(img.shape[:2]) < 1:
            raise InvalidArgument(
                f"images[{i}] must be (H, W) gray or (H, W, 3) RGB, got shape {img.shape}"
            )
        items.append(img)
        groups.setdefault(img.shape, []).append(i)
    out = [(idx, np.stack([items[i] for i in idx])) for idx in groups.values()]
    return len(items), out


def _resize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Resize/crop a float batch (n, C, H, W) to (n, C, size, size)."""
    import torch

    h, w = x.shape[-2:]
    size = spec.size
    if spec.resize == "resize" or (h == w == size and spec.crop_pct == 1.0):
        target = (size, size)
    else:
        # Same geometry as timm's eval transform: shorter side to floor(size / crop_pct).
        scale = math.floor(size / spec.crop_pct)
        if h <= w:
            target = (scale, max(scale, int(scale * w / h)))
        else:
            target = (max(scale, int(scale * h / w)), scale)
    if (h, w) != target:
        mode = spec.interpolation
        kwargs: dict[str, Any] = {}
        if mode != "nearest":
            # antialias makes downscaling behave like PIL instead of aliasing.
            kwargs = {"align_corners": False, "antialias": True}
        x = torch.nn.functional.interpolate(x, size=target, mode=mode, **kwargs)
        if mode == "bicubic":
            x = x.clamp_(0.0, 1.0)  # bicubic overshoots outside [0, 1]
    th, tw = x.shape[-2:]
    if (th, tw) != (size, size):
        top = int(round((th - size) / 2.0))
        left = int(round((tw - size) / 2.0))
        x = x[..., top : top + size, left : left + size]
    return x


def preprocess(
    images: np.ndarray | Sequence[np.ndarray],
    spec: InputSpec,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """uint8 images -> float32 tensor (N, spec.channels, spec.size, spec.size).

    `images`: a batch (N, H, W) gray or (N, H, W, 3) RGB, or a list of single images
    (H, W) / (H, W, 3) of any sizes (same-size images are processed together). Gray is
    repeated to 3 channels or RGB reduced to luma as the spec asks; then resize, scale
    to [0, 1] and normalise. Runs on `device` (default CPU) and returns the result there.
    """
    import torch

    spec.validate()
    n, groups = _as_image_groups(images)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    out = torch.empty((n, spec.channels, spec.size, spec.size), dtype=torch.float32, device=dev)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    for idx, arr in groups:
        if arr.shape[0] == 0:
            continue
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(dev)
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        if x.shape[1] == 3 and spec.channels == 1:
            # Reduce to luma before resizing: 3x less interpolation work, same result.
            luma = torch.tensor(_LUMA, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        x = _resize(x, spec)
        if x.shape[1] == 1 and spec.channels == 3:
            # Repeat gray after resizing for the same reason.
            x = x.expand(-1, 3, -1, -1)
        x = (x - mean) / std
        if idx is None:
            out.copy_(x)
        else:
            out[torch.as_tensor(idx, device=dev)] = x
    return out
