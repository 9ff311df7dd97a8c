"""ASUKA's trainable networks, each a diffusers ``ModelMixin`` + ``ConfigMixin``.

* :class:`~asuka.models.mae.MAEPrior` -- the masked auto-encoder prior (unmasked pixels only).
* :class:`~asuka.models.aligner.AsukaAligner` -- maps the prior to the UNet's condition space.
* :class:`~asuka.models.decoder.MaskConditionedDecoder` -- latent decoder that also sees the
  masked image and the mask.
"""
