"""Real geometry without weights: the published configs of google/siglip-base-patch16-224,
google/siglip2-base-patch16-naflex, facebook/dinov2-small and facebook/dinov2-with-registers-small
(``tests/configs/<org>--<name>/``: config.json + preprocessor_config.json as published), built on the
meta device. vlinterp's layout (patch count, grid, special tokens, padding) must equal what the
checkpoint's own image processor produces and the sequence the model's own embeddings make, for
four image sizes / aspect ratios."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

CONFIGS = os.path.join(os.path.dirname(__file__), "configs")
SIZES = [(224, 224), (640, 480), (480, 1280), (1000, 600)]  # (width, height)


def _image(w, h):
    return Image.fromarray((np.random.default_rng(w * h).random((h, w, 3)) * 255).astype(np.uint8))


def _meta_model(cls, cfg):
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(cfg)
    assert next(model.parameters()).is_meta
    return model


@pytest.fixture(scope="module")
def siglip():
    from transformers import AutoConfig, AutoImageProcessor, SiglipModel, SiglipProcessor

    import vlinterp.adapters.clip_siglip as cs
    from vlinterp.adapters.clip import ClipAdapter

    d = os.path.join(CONFIGS, "google--siglip-base-patch16-224")
    cfg = AutoConfig.from_pretrained(d)
    model = _meta_model(SiglipModel, cfg)
    proc = SiglipProcessor(image_processor=AutoImageProcessor.from_pretrained(d), tokenizer=cs.siglip_tokenizer(64))
    return ClipAdapter(model, proc, name="siglip-base-patch16-224"), proc.image_processor


@pytest.fixture(scope="module")
def siglip2():
    from transformers import AutoConfig, AutoImageProcessor, Siglip2Model, Siglip2Processor

    import vlinterp.adapters.clip_siglip as cs
    from vlinterp.adapters.clip import ClipAdapter

    d = os.path.join(CONFIGS, "google--siglip2-base-patch16-naflex")
    cfg = AutoConfig.from_pretrained(d)
    model = _meta_model(Siglip2Model, cfg)
    proc = Siglip2Processor(image_processor=AutoImageProcessor.from_pretrained(d), tokenizer=cs.siglip2_tokenizer(64))
    return ClipAdapter(model, proc, name="siglip2-base-patch16-naflex"), proc.image_processor


@pytest.fixture(scope="module", params=["facebook--dinov2-small", "facebook--dinov2-with-registers-small"])
def dinov2(request):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    from vlinterp.adapters.vit_dinov2 import Dinov2Adapter

    d = os.path.join(CONFIGS, request.param)
    cfg = AutoConfig.from_pretrained(d)
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AutoModel.from_config(cfg)
    return Dinov2Adapter(model, AutoImageProcessor.from_pretrained(d), name=request.param), cfg


def _sites_resolve(m):
    for s in m.sites():
        assert isinstance(m.module(s), torch.nn.Module), s


def test_siglip_published_geometry(siglip):
    m, ip = siglip
    assert type(ip).__name__.startswith("SiglipImageProcessor") and m.model.config.vision_config.image_size == 224
    _sites_resolve(m)
    assert m.num_layers("vision") == 12 and m.num_layers("text") == 12 and m.pool_site == "vision.pool.attn"
    for w, h in SIZES:
        b = m.prepare(images=[_image(w, h)])
        lay, px = b.layout, ip(images=[_image(w, h)], return_tensors="pt")["pixel_values"]
        assert tuple(b.inputs["pixel_values"].shape) == tuple(px.shape) == (1, 3, 224, 224)
        with torch.no_grad():
            emb = m.model.vision_model.embeddings(b.inputs["pixel_values"].to("meta"))
        assert lay.shape == (1, emb.shape[1]) == (1, 196)  # the model's own sequence length
        assert lay.counts(0) == {"pad": 0, "text": 0, "image": 196, "special": 0}  # no CLS: MAP-head pooling
        assert lay.grid(0) == (224 // 16, 224 // 16) and "cls" not in lay.spans
        assert lay.images[0].tiles[0].box == (0.0, 0.0, float(w), float(h))  # a plain resize: the whole image


def test_siglip2_naflex_published_geometry(siglip2):
    m, ip = siglip2
    assert ip.max_num_patches == 256 and ip.patch_size == 16
    _sites_resolve(m)
    grids = set()
    for w, h in SIZES:
        img = _image(w, h)
        b = m.prepare(images=[img])
        native = ip(images=[img], return_tensors="pt")
        rows, cols = native["spatial_shapes"][0].tolist()
        grids.add((rows, cols))
        N = native["pixel_attention_mask"].shape[1]
        with torch.no_grad():
            emb = m.model.vision_model.embeddings(native["pixel_values"].to("meta"), native["spatial_shapes"])
        lay = b.layout
        assert lay.shape == (1, emb.shape[1]) == (1, N) == (1, 256)
        assert lay.grid(0) == (rows, cols) and rows * cols == int(native["pixel_attention_mask"].sum()) <= 256
        assert lay.counts(0) == {"pad": N - rows * cols, "text": 0, "image": rows * cols, "special": 0}
        assert np.array_equal(lay.modality[0] == 0, native["pixel_attention_mask"][0].numpy() == 0)  # pads where the mask is 0
        assert abs(cols / rows - w / h) <= 0.5 * w / h  # the aspect ratio is kept (to within one patch)
        # the adapter's image-shaped pixels re-cut into the processor's own patches, bit for bit
        nat = m.backend.native_pixels(b.inputs)
        assert torch.equal(nat["pixel_values"], native["pixel_values"])
        assert torch.equal(nat["spatial_shapes"], native["spatial_shapes"])
    assert len(grids) == len(SIZES)  # NaFlex: every aspect ratio gets its own grid


def test_dinov2_published_geometry(dinov2):
    m, cfg = dinov2
    n_reg = int(getattr(cfg, "num_register_tokens", 0) or 0)
    assert cfg.patch_size == 14 and cfg.image_size == 518 and n_reg in (0, 4)
    assert m.n_registers == n_reg and m.score_kind == "feature_norm"
    _sites_resolve(m)
    assert m.num_layers("vision") == 12 and m.sites("vision.blocks.11.*") == [f"vision.blocks.11.{k}" for k in ("attn", "mlp", "resid")]
    for w, h in SIZES:
        img = _image(w, h)
        b = m.prepare(images=[img])
        px = m.processor(images=[img], return_tensors="pt")["pixel_values"]
        assert tuple(px.shape) == tuple(b.inputs["pixel_values"].shape) == (1, 3, 224, 224)
        with torch.no_grad():
            emb = m.model.embeddings(px.to("meta"))
        lay = b.layout
        assert lay.shape == (1, emb.shape[1]) == (1, 1 + n_reg + 256)
        assert lay.counts(0) == {"pad": 0, "text": 0, "image": 256, "special": 1 + n_reg}
        assert lay.grid(0) == (16, 16) and lay.span("cls", 0).tolist() == [0]
        assert (lay.span("registers", 0).tolist() if n_reg else []) == list(range(1, 1 + n_reg))
        assert lay.image_positions(0).tolist() == list(range(1 + n_reg, 1 + n_reg + 256))
        # shortest edge -> 256, centre crop 224: the box is the crop, mapped back to original pixels
        s = 256 / min(w, h)
        x0, y0, x1, y1 = lay.images[0].tiles[0].box
        assert abs((x1 - x0) - 224 / s) < 1.5 and abs((y1 - y0) - 224 / s) < 1.5
        assert abs(x0 + x1 - w) < 3 and abs(y0 + y1 - h) < 3  # centred
