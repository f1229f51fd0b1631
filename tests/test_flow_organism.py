"""Issue 32's information-flow numbers on the organisms (held-out seed 11, presence questions answered
"yes"): attention knockout, the attention output split by the keys it reads, DLA exactness, RelP's
agreement with activation patching. Where an organism misses an issue floor the test asserts the level
it reaches (stated at the test and in the README)."""
import numpy as np
import pytest

from conftest import load_shipped


@pytest.mark.slow
def test_knockout_and_tracing_place_the_image_hand_off_at_the_same_layer(shapes_llava):
    """Floor: image -> last blocked at the layer tracing found drops P(yes) by >= 50%, other layers much
    less. Tracing's whole attention output at the last token peaks at layer 1 (RR 0.52 here, 8 scenes;
    0.57 on 47), but the part of it that reads the image keys peaks at layer 2 (0.505; layer 1 0.39;
    0.54 / 0.35 on 47), and that is where the knockout drops P(yes) by 0.505 (32 scenes; layers 0, 1, 3:
    0.08, 0.29, 0.10)."""
    from vlinterp.eval.flow import attention_part_curves, knockout_flow

    k = knockout_flow(shapes_llava, n=32, seed=11, edges=("image:last",))
    d = np.array(k["drop"][0])
    assert k["n"] == 32 and int(d.argmax()) == 2 and d[2] >= 0.5, d
    assert d[0] <= 0.15 and d[3] <= 0.15 and d[1] <= d[2] - 0.15, d
    a = attention_part_curves(shapes_llava, n=8, seed=11)
    assert int(np.argmax(a["rr"]["whole"])) == 1 and int(np.argmax(a["rr"]["image"])) == 2, a["rr"]
    assert a["rr"]["image"][2] >= 0.5 and a["rr"]["image"][1] <= a["rr"]["image"][2] - 0.1, a["rr"]  # 0.505 / 0.394


@pytest.mark.slow
def test_qwen_image_hand_off_peaks_at_layer_2_below_half():
    """shapes-qwen: image -> last peaks at layer 2 in the knockout, at 0.28 of P(yes): the 50% floor is
    missed; more of the image reaches the answer through the question tokens (image -> question at
    layer 2: 0.53). The image-key part of tracing's attention output also peaks at layer 2 on 48 scenes
    (0.17; benchmarks/flow_shapes.py), but is too small to place on fewer scenes."""
    from vlinterp.eval.flow import knockout_flow

    m = load_shipped("shapes-qwen")
    k = knockout_flow(m, n=32, seed=11, edges=("image:last", "image:question"))
    d = np.array(k["drop"])
    assert int(d[0].argmax()) == 2 and 0.2 <= d[0, 2] < 0.5, d
    assert d[1, 2] >= 0.45, d  # image -> question at layer 2 (0.53)


@pytest.mark.slow
def test_dla_is_exact_and_relp_agreement_reaches_its_level(shapes_llava):
    """DLA: the parts sum to logit(yes) - logit(no) within 1e-4 (bound; measured 2.9e-6 on 32 scenes). RelP: floor
    >= 90% sign agreement with activation patching, missed: 8 scenes, 528 cells with a patched effect,
    RelP (LRP rules) 0.759, attribution patching (plain gradients) 0.879 (16 scenes: 0.763 / 0.867); with AttnLRP's
    attention rules 0.816 (16 scenes: 0.802): letting relevance through the attention pattern helps here."""
    from vlinterp.eval.flow import relp_agreement
    from vlinterp.eval.trace import shapes_items
    from vlinterp.tracing import dla

    for it in shapes_items(8, 11, "test"):
        b = shapes_llava.prepare(images=[it.image], text=[it.prompt])
        r = dla(shapes_llava, b, "yes", foil="no").arrays
        assert abs(r["components"].sum() + r["direct"][0] + r["other"][0] + r["const"][0] - r["total"][0]) <= 1e-4
    lrp = relp_agreement(shapes_llava, n=8, seed=11, rules="lrp")
    plain = relp_agreement(shapes_llava, n=8, seed=11, rules="none")
    attn = relp_agreement(shapes_llava, n=8, seed=11, rules="attnlrp")
    assert lrp["cells"] == plain["cells"] == attn["cells"] >= 500
    assert lrp["agreement"] >= 0.75 and plain["agreement"] >= 0.87, (lrp["agreement"], plain["agreement"])
    assert attn["agreement"] >= 0.81 and attn["agreement"] > lrp["agreement"] + 0.03, (attn["agreement"], lrp["agreement"])
