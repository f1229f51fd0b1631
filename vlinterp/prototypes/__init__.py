"""Prototype maps ("this looks like that") over any adapter's frozen patch stream: ProtoPNet heads at
several pooled grid scales, push onto training patches (one registry of push methods,
:data:`~.push.PUSHES`), sparse grouped last layer, explanations, and consistency / stability /
localisation measured against items' object masks. Training on the shapes world and its evaluation
are :mod:`vlinterp.eval.protos`; the explanation figure is :mod:`vlinterp.viz.proto_plot`."""
from .fit import default_site, fit
from .head import ProtoHead
from .model import ProtoModel
from .push import PUSHES

__all__ = ["ProtoHead", "ProtoModel", "fit", "default_site", "PUSHES"]
