"""``vlinterp serve``: a local web app to explore one vision-language model.

Upload or pick an image, ask a question, then browse where the answer came from: each answer
token's map from any saliency method (with the prompt words it used and per-layer maps), raw
attention by layer and head, a causal trace of the answer (FCCT recovery rates) and the SAE
features active at a clicked patch or token. :mod:`.work` and :mod:`.tabs` compute, :mod:`.jobs`
runs the computations on worker threads (progress, cancel, cache), :mod:`.app` is the Starlette app.

This is a command-level module: only :mod:`vlinterp.commands.serve` imports it.

>>> from vlinterp.serve import Workbench, create_app
>>> app = create_app(Workbench(vi.load("shapes-llava"), "shapes-llava"))   # an ASGI app for uvicorn
"""
from .app import create_app
from .jobs import Jobs
from .work import Workbench, shapes_examples

__all__ = ["create_app", "Jobs", "Workbench", "shapes_examples"]
