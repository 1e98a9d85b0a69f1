"""A small registry of segmentation architectures: ``create_model(arch, encoder_name, ...)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from portraitseg.classes import NUM_CLASSES
from portraitseg.models.heads import EncoderHead, FCNHead
from portraitseg.models.pretrained import (
    HF_HOST,
    TORCHVISION_HOST,
    hf_cache_dir,
    load_efficientnet_lite0,
    torch_hub_dir,
    weights_source,
)
from portraitseg.models.segmenter import IMAGENET_MEAN, IMAGENET_STD, Segmenter

BUNDLED_ENCODERS = {"tu-efficientnet_lite0": load_efficientnet_lite0}


def _smp_encoder_weights(encoder_name: str, encoder_weights: str | None) -> str | bool | None:
    if encoder_weights is None:
        return None
    if encoder_weights != "imagenet":
        raise ValueError(
            f"encoder_weights={encoder_weights!r} is not available for {encoder_name}; "
            "use 'imagenet' or null"
        )
    return True if encoder_name.startswith("tu-") else "imagenet"


def _with_encoder_weights(
    build: Callable[[str | bool | None], nn.Module], encoder_name: str, encoder_weights: str | None
) -> nn.Module:
    """Build with weights from the bundled file, the hub (offline-guarded), or none."""
    weights = _smp_encoder_weights(encoder_name, encoder_weights)
    if weights is not None and encoder_name in BUNDLED_ENCODERS:
        model = build(None)
        encoder = model.encoder if hasattr(model, "encoder") else model
        BUNDLED_ENCODERS[encoder_name](encoder.model)
        return model
    if weights is None:
        return build(None)
    with weights_source(f"ImageNet weights for {encoder_name}", HF_HOST, hf_cache_dir()):
        return build(weights)


def _fcn(encoder_name: str, encoder_weights: str | None, classes: int, skip: bool = False) -> nn.Module:
    import segmentation_models_pytorch as smp

    encoder = _with_encoder_weights(
        lambda w: smp.encoders.get_encoder(encoder_name, in_channels=3, depth=5, weights=w),
        encoder_name,
        encoder_weights,
    )
    channels = encoder.out_channels
    return EncoderHead(encoder, FCNHead(channels[-1], classes, channels[-2] if skip else None))


def _smp(arch: str) -> Callable[..., nn.Module]:
    def build(encoder_name: str, encoder_weights: str | None, classes: int, **kwargs) -> nn.Module:
        import segmentation_models_pytorch as smp

        return _with_encoder_weights(
            lambda w: smp.create_model(
                arch, encoder_name=encoder_name, encoder_weights=w, classes=classes, **kwargs
            ),
            encoder_name,
            encoder_weights,
        )

    return build


def _tv_fcn(encoder_name: str, encoder_weights: str | None, classes: int) -> nn.Module:
    """torchvision's dilated FCN-ResNet50/101; ``coco`` loads its COCO-VOC weights."""
    from torchvision import models as tvmodels
    from torchvision.models import segmentation as tvseg

    builders = {"resnet50": tvseg.fcn_resnet50, "resnet101": tvseg.fcn_resnet101}
    if encoder_name not in builders:
        raise ValueError(f"tv_fcn supports encoders {sorted(builders)}, got {encoder_name!r}")
    if encoder_weights not in (None, "coco", "imagenet"):
        raise ValueError(f"tv_fcn encoder_weights must be coco, imagenet or null, got {encoder_weights!r}")
    build = builders[encoder_name]
    if encoder_weights is None:
        model = build(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
    else:
        enum = (tvseg.FCN_ResNet50_Weights if encoder_name == "resnet50" else tvseg.FCN_ResNet101_Weights)
        backbone = getattr(tvmodels, f"ResNet{encoder_name[6:]}_Weights")
        url = (enum.DEFAULT if encoder_weights == "coco" else backbone.DEFAULT).url
        with weights_source(f"torchvision {encoder_weights} weights for fcn_{encoder_name}",
                            TORCHVISION_HOST, torch_hub_dir(), files=[url.rsplit("/", 1)[-1]]):
            if encoder_weights == "coco":
                model = build(weights="DEFAULT", aux_loss=True)
            else:
                model = build(weights=None, weights_backbone="DEFAULT", num_classes=classes)
    if encoder_weights == "coco":  # replace the 21-class VOC scorer, drop the aux head
        model.classifier[-1] = nn.Conv2d(model.classifier[-1].in_channels, classes, 1)
        model.aux_classifier = None
    return model


#: arch name -> (builder, output stride the input is padded to)
MODELS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "fcn": (_fcn, 32),
    "deeplabv3": (_smp("deeplabv3"), 32),
    "deeplabv3plus": (_smp("deeplabv3plus"), 32),
    "unet": (_smp("unet"), 32),
    "fpn": (_smp("fpn"), 32),
    "tv_fcn": (_tv_fcn, 8),
}


def encoder_normalization(encoder_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std an encoder's pretrained weights expect (no network: read from timm's config)."""
    if encoder_name.startswith("tu-"):
        import timm

        cfg = timm.get_pretrained_cfg(encoder_name[3:].split(".")[0])
        if cfg is not None and cfg.mean and cfg.std:
            return tuple(cfg.mean), tuple(cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


def check_encoder(encoder_name: str) -> None:
    """Raise ``ValueError`` listing the known names if ``encoder_name`` is not an smp encoder or
    ``tu-<timm model>``."""
    import difflib

    if encoder_name.startswith("tu-"):
        import timm

        if timm.is_model(encoder_name[3:]):
            return
        close = difflib.get_close_matches(encoder_name[3:], timm.list_models(), n=5)
        raise ValueError(
            f"unknown encoder {encoder_name!r}: timm has no model {encoder_name[3:]!r}"
            + (f"; close: {', '.join('tu-' + c for c in close)}" if close else "")
            + " (timm.list_models() lists them all)"
        )
    import segmentation_models_pytorch as smp

    known = smp.encoders.get_encoder_names()
    if encoder_name not in known:
        close = difflib.get_close_matches(encoder_name, known, n=3)
        raise ValueError(
            f"unknown encoder {encoder_name!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f"; known: {', '.join(known)}, or tu-<any timm model> (e.g. tu-efficientnet_lite0)"
        )


def create_model(
    arch: str = "fcn",
    encoder_name: str = "resnet50",
    encoder_weights: str | None = None,
    classes: int = NUM_CLASSES,
    person_head: bool = False,
    **kwargs,
) -> Segmenter:
    """Build a :class:`Segmenter`: image ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, classes, H, W)``.

    Args:
        arch: one of :data:`MODELS` (``fcn``, ``deeplabv3``, ``deeplabv3plus``, ``unet``, ``fpn``,
            ``tv_fcn``).
        encoder_name: any segmentation-models-pytorch encoder (``resnet50``, ``mobilenet_v2``,
            ``tu-<timm model>``...); ``resnet50``/``resnet101`` for ``tv_fcn``.
        encoder_weights: ``imagenet``, ``coco`` (``tv_fcn`` only) or ``None``.
        classes: number of output classes.
        person_head: add a whole-person matte output (one more channel of the same head, a
            sigmoid logit; :meth:`Segmenter.segment` returns it).
        **kwargs: passed to the architecture (``skip=True`` gives FCN-16s; smp decoder options).
    """
    if arch not in MODELS:
        raise ValueError(f"unknown model arch {arch!r}; known: {', '.join(sorted(MODELS))}")
    builder, stride = MODELS[arch]
    if arch != "tv_fcn":
        check_encoder(encoder_name)
    net = builder(encoder_name, encoder_weights, classes + int(person_head), **kwargs)
    mean, std = encoder_normalization(encoder_name)
    return Segmenter(net, classes, mean, std, stride, person_head=bool(person_head))
