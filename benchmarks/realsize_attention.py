"""attention(queries=) at LLaVA-1.5 language-model width: one Llama-7B attention layer (4096 wide, 32 heads,
T=640, random weights, fp32, CPU), the full [1, 32, T, T] probabilities vs the 3 query rows an answer
reads (same values). ``PYTHONPATH=$PWD python benchmarks/realsize_attention.py``"""
import time, torch, resource
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding
from vlinterp.core.attention import hf_self_attention
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008, max_position_embeddings=4096)
cfg._attn_implementation = "eager"
att = LlamaAttention(cfg, 0).eval()
T = 640
h = torch.randn(1, T, 4096)
pos = torch.arange(T)[None]
pe = LlamaRotaryEmbedding(cfg)(h, pos)
mask = torch.full((1, 1, T, T), torch.finfo(torch.float32).min).triu(1)
def run(q):
    t0 = time.perf_counter()
    with torch.no_grad():
        p = hf_self_attention(att, (h,), {"position_embeddings": pe, "attention_mask": mask}, queries=q)
    return p, time.perf_counter() - t0
full, tf = run(None); rows, tr = run([T - 3, T - 2, T - 1])
full, tf2 = run(None); rows, tr2 = run([T - 3, T - 2, T - 1])
assert torch.allclose(rows, full[:, :, -3:], atol=1e-6)
print(f"T={T}, width 4096, 32 heads: full maps {tuple(full.shape)} {full.numel()*4/2**20:.0f} MB in {min(tf,tf2):.2f}s; "
      f"3 query rows {tuple(rows.shape)} {rows.numel()*4/2**20:.2f} MB in {min(tr,tr2):.2f}s; ratio {min(tr,tr2)/min(tf,tf2):.2f}x; rows equal the full maps' rows")
