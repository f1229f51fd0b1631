"""Metrics that accept any method's :class:`~vlinterp.core.result.Result` (or a raw ``[H, W]`` map).

Faithfulness against ground truth and the model: :func:`pointing_game`,
:func:`energy_pointing_game`, :func:`obj_iou` (Otsu threshold), :func:`deletion_auc` and
:func:`insertion_auc` (blur baseline, batched ``score_fn``); baseline maps
:func:`random_map` and :func:`centre_map`. Answers: :func:`pope` (POPE accuracy/F1 on
the shapes world), :func:`choose`.
"""
from .pope import choose, pope, yes_no_scores
from .baselines import BASELINES, centre_map, random_map
from .faithfulness import (as_map, auc, blur, class_index, clip_score_fn, default_tolerance, deletion_auc,
                           energy_pointing_game, evaluate, insertion_auc, llava_score_fn, normalize, obj_iou,
                           otsu_mask, perturbation_curve, perturbation_images, pixel_order, pointing_game,
                           result_map, score_fn_for, vit_score_fn)

__all__ = [
    "BASELINES", "centre_map", "random_map", "as_map", "auc", "blur", "class_index", "clip_score_fn",
    "default_tolerance", "deletion_auc", "energy_pointing_game", "evaluate", "insertion_auc", "llava_score_fn",
    "normalize", "obj_iou", "otsu_mask", "perturbation_curve", "perturbation_images", "pixel_order",
    "pointing_game", "result_map", "score_fn_for", "vit_score_fn", "choose", "pope", "yes_no_scores",
]
