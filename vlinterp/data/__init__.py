"""Procedural data for vlinterp: the shapes world (scenes with exact ground truth).

See :mod:`vlinterp.data.shapes` (scenes, splits, patch coverage),
:mod:`vlinterp.data.questions` (captions, QA, POPE-style splits),
:mod:`vlinterp.data.renderings` (text / text-in-image / mixed renderings for a
modality audit) and :mod:`vlinterp.data.export` (fixed held-out sets on disk).
"""
from .shapes import (BACKGROUND_RANGE, COLOUR_RGB, COLOURS, GAP, IMAGE_SIZE, JITTER,
                     MAX_OBJECTS, MAX_SIZE, MIN_SIZE, NUM_WORDS, PAIR_INDEX, PAIRS,
                     PRIOR_PAIRS, PRIOR_STRENGTH, SHAPES, Obj, Scene, colourise_index_map, draw_mask,
                     iter_scenes, make_scene, make_split, object_index_map,
                     pair_frequencies, partner, patch_coverage, plot_samples,
                     scene_rng, split_seed)

__all__ = [
    "BACKGROUND_RANGE", "COLOUR_RGB", "COLOURS", "GAP", "IMAGE_SIZE", "JITTER",
    "MAX_OBJECTS", "MAX_SIZE", "MIN_SIZE", "NUM_WORDS", "PAIR_INDEX", "PAIRS",
    "PRIOR_PAIRS", "PRIOR_STRENGTH", "SHAPES", "Obj", "Scene", "colourise_index_map", "draw_mask",
    "iter_scenes", "make_scene", "make_split", "object_index_map",
    "pair_frequencies", "partner", "patch_coverage", "plot_samples", "scene_rng",
    "split_seed",
]
