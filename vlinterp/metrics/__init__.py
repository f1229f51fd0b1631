"""Metrics that accept any method's :class:`~vlinterp.core.result.Result` (or a raw ``[H, W]`` map).

Faithfulness against ground truth and the model: :func:`pointing_game`,
:func:`energy_pointing_game`, :func:`obj_iou` (Otsu threshold), :func:`deletion_auc` and
:func:`insertion_auc` (blur baseline, batched ``score_fn``); baseline maps
:func:`random_map` and :func:`centre_map`. Answers: :func:`choose` (the greedy answer among
candidates), :func:`yes_no_scores` (POPE accuracy/F1/false-yes), :mod:`.chair` (CHAIR on captions),
:mod:`.answers` (answers to item lists, scored per group).
"""
from .pope import choose, presence_scores, yes_no_scores
from .baselines import BASELINES, centre_map, random_map
from .faithfulness import (as_map, auc, blur, class_index, clip_score_fn, default_tolerance, deletion_auc,
                           energy_pointing_game, evaluate, insertion_auc, llava_score_fn, normalize, obj_iou,
                           otsu_mask, perturbation_curve, perturbation_images, pixel_order, pointing_game,
                           result_map, score_fn_for, vit_score_fn)

__all__ = [
    "BASELINES", "centre_map", "random_map", "as_map", "auc", "blur", "class_index", "clip_score_fn",
    "default_tolerance", "deletion_auc", "energy_pointing_game", "evaluate", "insertion_auc", "llava_score_fn",
    "normalize", "obj_iou", "otsu_mask", "perturbation_curve", "perturbation_images", "pixel_order",
    "pointing_game", "result_map", "score_fn_for", "vit_score_fn", "choose", "presence_scores", "yes_no_scores",
]
