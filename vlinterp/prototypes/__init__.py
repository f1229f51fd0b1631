"""Prototype maps ("this looks like that") over any adapter's frozen patch stream: ProtoPNet heads at
several pooled grid scales, push onto training patches, sparse grouped last layer, explanation
figures, and consistency / stability / localisation measured on shapes-world ground truth."""
from .fit import default_site, fit, fit_shapes
from .head import ProtoHead
from .model import ProtoModel

__all__ = ["ProtoHead", "ProtoModel", "fit", "fit_shapes", "default_site"]
