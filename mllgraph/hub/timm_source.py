"""Any timm ImageNet classifier as an expert, from timm's own metadata.

`mllgraph models register --timm NAME [--weights FILE]`: the architecture is NAME's (a timm
model name, optionally with its pretrained tag, e.g. ``resnet18.a1_in1k``); the input size,
crop, interpolation and normalisation come from its pretrained config; the heads' wnids from
the label set timm says it was trained on (``timm.data.infer_imagenet_subset``: ImageNet-1k,
-12k, -21k/22k), through ``timm.data.ImageNetInfo``. The weights come from a local file
(a state_dict, safetensors or torch) or, where a user has internet and gives none, from the
Hugging Face hub through timm (never used by the tests). The registration is then the usual
one (validated, content-addressed, one transaction).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mllgraph.errors import InvalidArgument, Unavailable
from mllgraph.hub.preprocess import INTERPOLATIONS, InputSpec
from mllgraph.hub.registry import Registration


def _model(name: str):  # -> nn.Module, built without downloading anything
    import timm

    if not timm.is_model(name):
        raise InvalidArgument(f"--timm {name!r} is not a timm model (timm {timm.__version__})")
    return timm.create_model(name, pretrained=False)


def wnids_of(model) -> list[str]:  # model: nn.Module
    """The wnid of each head, in logit order, from timm's label-set metadata."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if not subset:
        raise InvalidArgument(
            f"timm does not say which label set {model.pretrained_cfg.get('architecture')} "
            "was trained on (no ImageNet subset): register it with --wnids or --class-names"
        )
    info = ImageNetInfo(subset)
    if info.num_classes() != model.num_classes:
        raise InvalidArgument(
            f"timm's {subset} label set has {info.num_classes()} classes but the model has "
            f"{model.num_classes} heads"
        )
    return [info.index_to_label_name(i) for i in range(model.num_classes)]


def input_spec_of(model) -> InputSpec:
    """The evaluation transform timm states for the model, as an InputSpec."""
    cfg = model.pretrained_cfg
    channels, height, width = cfg.get("input_size", (3, 224, 224))
    interpolation = cfg.get("interpolation", "bilinear")
    return InputSpec(
        size=int(max(height, width)),
        resize="resize_crop",
        mean=tuple(float(x) for x in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(x) for x in cfg.get("std", (0.229, 0.224, 0.225))),
        channels=int(channels),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
    ).validate()


def registration(
    name: str,
    timm_name: str,
    *,
    version: str = "1",
    weights: Path | None = None,
    top1_accuracy: float | None = None,
    download_dir: Path | None = None,
) -> Registration:
    """A Registration for `timm_name`; see the module docstring."""
    model = _model(timm_name)
    wnids = wnids_of(model)
    spec = input_spec_of(model)
    if weights is None:
        weights = _download(timm_name, download_dir or Path(tempfile.mkdtemp(prefix="mll-timm-")))
    return Registration(
        name=name,
        version=version,
        arch=timm_name.split(".")[0],
        weights_path=Path(weights),
        wnids=wnids,
        input_spec=spec,
        metadata={"timm_model": timm_name, "label_set": "timm ImageNetInfo"},
        top1_accuracy=top1_accuracy,
    )


def _download(timm_name: str, folder: Path) -> Path:
    """Pretrained weights through timm (the Hugging Face hub): needs internet."""
    import timm

    from mllgraph.hub import loading

    try:
        model = timm.create_model(timm_name, pretrained=True)
    except Exception as e:  # no network, no such pretrained tag, hub errors
        raise Unavailable(
            f"could not fetch the pretrained weights of {timm_name} ({type(e).__name__}: {e}); "
            "give a local file with --weights"
        ) from e
    return loading.save_weights(model, folder / f"{timm_name.replace('/', '_')}.safetensors")
