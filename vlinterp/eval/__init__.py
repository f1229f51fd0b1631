"""Evaluation: the only layer that knows datasets.

Readers turn a dataset (the shapes world, and user formats) into :class:`~vlinterp.core.items.Item`
lists; tasks run methods over items and score them with :mod:`vlinterp.metrics`. Commands call
these functions; methods never see a dataset name. Layers: commands -> eval -> methods -> adapters
-> core.
"""
