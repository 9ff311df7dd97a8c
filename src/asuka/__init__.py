"""ASUKA: context-stable and visual-consistent image inpainting.

Data flow (see :meth:`asuka.pipeline.AsukaInpaintPipeline.__call__`)::

    image + mask -> MAE prior -> alignment -> frozen UNet -> mask-conditioned decoder -> composite

Conventions used everywhere in this package:

* images are float tensors ``(B, 3, H, W)``, RGB, in ``[-1, 1]``;
* masks are float tensors ``(B, 1, H, W)`` with ``1 = hole`` (pixels to fill), ``0 = keep``;
* PIL images / uint8 arrays only at the edges (CLI, file I/O, web).

Heavy modules (torch, diffusers) are imported lazily, so ``import asuka`` and
``asuka --help`` stay fast.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "MAEPrior": "asuka.models.mae",
    "AsukaAligner": "asuka.models.aligner",
    "MaskConditionedDecoder": "asuka.models.decoder",
    "AsukaInpaintPipeline": "asuka.pipeline",
    "AsukaFluxFillPipeline": "asuka.pipeline_flux",
    "load_pipeline": "asuka.pipeline",
    "DEFAULT_MODEL": "asuka.registry",
    "AsukaError": "asuka.errors",
    "InputError": "asuka.errors",
    # diffusers' loader checks a component of library "asuka" against the base classes it finds
    # on this module (getattr(asuka, "ModelMixin")), so the name has to be served here.
    "ModelMixin": "diffusers",
}

__all__ = sorted(set(_LAZY) - {"ModelMixin"}) + ["__version__"]


def __getattr__(name):
    # diffusers' loader does getattr(import_module("asuka"), class_name): this serves it too.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asuka' has no attribute {name!r}")
