"""The real-geometry benchmark builders (benchmarks/realsize_models.py) honour the asked dtype: the
published LLaVA-1.5 config keeps ``torch_dtype: float16`` inside its text config, which built the
language model in fp16 beside a float32 tower (a dtype error at the first forward)."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import realsize_models as M  # noqa: E402


def test_published_configs_lose_their_dtype_at_every_depth():
    raw = M._json("llava-1.5-7b-hf", "config.json")
    assert "torch_dtype" not in raw and "torch_dtype" not in raw["text_config"]
    assert raw["text_config"]["model_type"] == "llama" and raw["vision_config"]["image_size"] == 336


def test_llava15_geometry_builds_in_one_dtype():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    raw = M._json("llava-1.5-7b-hf", "config.json")
    raw["text_config"]["num_hidden_layers"] = 1
    raw["vision_config"]["num_hidden_layers"] = 1
    cfg = LlavaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.device("meta"):
            model = LlavaForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(old)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config.text_config.hidden_size == 4096
