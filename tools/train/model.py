"""Family A (xLSTM-Large, the xLSTM-7B architecture) in PyTorch, for training the demo model.

Written from ../shared/xlstm-spec.md sections 1-3: parameter names and shapes are the
checkpoint's (section 3.3), so `state_dict()` exports without renaming. Training sequences
always start from the zero state, so the mLSTM runs the chunkwise form of spec 2.3 from a zero
boundary state (chunks of 64): that keeps the initial-state candidate `b_r + m_0` in the
stabiliser, which makes it the same function as the recurrent step the runtime uses for
decoding (2.2, the parallel form, drops that candidate).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class Config:
    def __init__(self, vocab_size, embedding_dim, num_blocks, num_heads, qk_dim_factor=0.5,
                 v_dim_factor=1.0, ffn_proj_factor=2.667, ffn_round_up_to_multiple_of=64,
                 gate_soft_cap=15.0, output_logit_soft_cap=30.0, norm_eps=1e-6, eps=1e-6):
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.qk_dim_factor = qk_dim_factor
        self.v_dim_factor = v_dim_factor
        self.ffn_proj_factor = ffn_proj_factor
        self.ffn_round_up_to_multiple_of = ffn_round_up_to_multiple_of
        self.gate_soft_cap = gate_soft_cap
        self.output_logit_soft_cap = output_logit_soft_cap
        self.norm_eps = norm_eps
        self.eps = eps

    @property
    def qk_dim(self):
        return int(self.embedding_dim * self.qk_dim_factor)

    @property
    def v_dim(self):
        return int(self.embedding_dim * self.v_dim_factor)

    @property
    def ffn_dim(self):
        r = self.ffn_round_up_to_multiple_of
        return math.ceil(self.embedding_dim * self.ffn_proj_factor / r) * r

    def hf_config(self):
        """config.json in the layout xlstmd (and transformers' xLSTM) reads."""
        return {
            "add_out_norm": True, "architectures": ["xLSTMForCausalLM"],
            "autocast_kernel_dtype": "bfloat16", "bos_token_id": 0, "chunk_size": 64,
            "chunkwise_kernel": "chunkwise--native_autograd",
            "embedding_dim": self.embedding_dim, "eos_token_id": 0, "eps": self.eps,
            "ffn_proj_factor": self.ffn_proj_factor,
            "ffn_round_up_to_multiple_of": self.ffn_round_up_to_multiple_of,
            "force_bos_token_insert": True, "gate_soft_cap": self.gate_soft_cap,
            "hidden_size": self.embedding_dim, "inference_state_dtype": "float32",
            "max_inference_chunksize": 16384, "mode": "inference", "model_type": "xlstm",
            "norm_eps": self.norm_eps, "norm_reduction_force_float32": True,
            "num_blocks": self.num_blocks, "num_heads": self.num_heads,
            "num_hidden_layers": self.num_blocks,
            "output_logit_soft_cap": self.output_logit_soft_cap, "pad_token_id": 0,
            "qk_dim_factor": self.qk_dim_factor, "return_last_states": True,
            "sequence_kernel": "native_sequence__native", "step_kernel": "native",
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_bias": False,
            "use_cache": True, "v_dim_factor": self.v_dim_factor,
            "vocab_size": self.vocab_size, "weight_mode": "single",
        }


def softcap(x, cap):
    return cap * torch.tanh(x / cap)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MultiHeadLayerNorm(nn.Module):
    def __init__(self, num_heads, head_dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_heads * head_dim))
        self.num_heads, self.head_dim, self.eps = num_heads, head_dim, eps

    def forward(self, h):  # [B, NH, S, DV] -> [B, S, NH*DV]
        h = F.layer_norm(h, (self.head_dim,), eps=self.eps)
        b, nh, s, dv = h.shape
        return h.transpose(1, 2).reshape(b, s, nh * dv) * self.weight


def mlstm_zero_state(q, k, v, i, f, eps, chunk=64):
    """q, k [B, NH, S, DQK], v [B, NH, S, DV], i, f [B, NH, S] (capped pre-activations).

    Chunkwise form of spec 2.3 from the zero state (C_0 = 0, n_0 = 0, m_0 = 0): each chunk's
    output combines the carried state with the chunk's own quadratic part. For every position
    the stabiliser is the maximum of the same candidates as in the one-chunk form (b_r + m_0
    and every b_r - b_s + i_s), so any chunk size computes the same function as the recurrent
    step; chunks keep the [L, L] tensors, which dominate a CPU training step, small. The
    stabiliser carries no gradient (it cancels between numerator and denominator)."""
    bsz, nh, s, dqk = q.shape
    if s % chunk or s <= chunk:
        chunk = s
    nc, L = s // chunk, chunk
    q = q * (1.0 / math.sqrt(dqk))
    qc, kc = q.view(bsz, nh, nc, L, dqk), k.view(bsz, nh, nc, L, dqk)
    vc = v.view(bsz, nh, nc, L, -1)
    bl = torch.cumsum(F.logsigmoid(f).view(bsz, nh, nc, L), dim=-1)  # within-chunk gates
    ic = i.view(bsz, nh, nc, L)
    g = bl[..., -1]                                                  # [B, NH, NC]
    # Carried state: m_c = max(g_c + m_{c-1}, max_s (g_c - bl_s + i_s)); C and n are stored
    # divided by exp(m_c).
    w_log = g.unsqueeze(-1) - bl + ic                                # [B, NH, NC, L]
    m_loc = w_log.max(dim=-1).values.detach()
    m_prev = [torch.zeros_like(g[..., 0])]
    c_prev = [q.new_zeros(bsz, nh, dqk, vc.shape[-1])]
    n_prev = [q.new_zeros(bsz, nh, dqk)]
    for c in range(nc - 1):
        m_new = torch.maximum(g[..., c] + m_prev[-1], m_loc[..., c])
        decay = torch.exp(g[..., c] + m_prev[-1] - m_new)
        kw = kc[:, :, c] * torch.exp(w_log[..., c, :] - m_new.unsqueeze(-1)).unsqueeze(-1)
        c_prev.append(decay[..., None, None] * c_prev[-1] + kw.transpose(-1, -2) @ vc[:, :, c])
        n_prev.append(decay.unsqueeze(-1) * n_prev[-1] + kw.sum(dim=-2))
        m_prev.append(m_new)
    c_prev, n_prev = torch.stack(c_prev, 2), torch.stack(n_prev, 2)  # [B, NH, NC, ...]
    m_prev = torch.stack(m_prev, 2)
    # Within each chunk: [r, s] = bl_r - bl_s + i_s for s <= r, next to the state's b_r + m.
    log_d = bl.unsqueeze(-1) - (bl - ic).unsqueeze(-2)               # [B, NH, NC, L, L]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    a = bl + m_prev.unsqueeze(-1)                                    # [B, NH, NC, L]
    m = torch.maximum(a, log_d.max(dim=-1).values).detach()
    p = torch.exp(log_d - m.unsqueeze(-1)) * (qc @ kc.transpose(-1, -2))
    inter = torch.exp(a - m).unsqueeze(-1)
    num = p @ vc + inter * (qc @ c_prev)
    den = p.sum(dim=-1) + inter.squeeze(-1) * (qc @ n_prev.unsqueeze(-1)).squeeze(-1)
    h = num / (torch.maximum(den.abs(), torch.exp(-m)) + eps).unsqueeze(-1)
    return h.reshape(bsz, nh, s, -1)


class MlstmLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e, qk, vd, nh = cfg.embedding_dim, cfg.qk_dim, cfg.v_dim, cfg.num_heads
        self.q = nn.Linear(e, qk, bias=False)
        self.k = nn.Linear(e, qk, bias=False)
        self.v = nn.Linear(e, vd, bias=False)
        self.ogate_preact = nn.Linear(e, vd, bias=False)
        self.igate_preact = nn.Linear(e, nh, bias=True)
        self.fgate_preact = nn.Linear(e, nh, bias=True)
        self.multihead_norm = MultiHeadLayerNorm(nh, vd // nh, cfg.norm_eps)
        self.out_proj = nn.Linear(vd, e, bias=False)
        self.cfg = cfg

    def forward(self, x):  # [B, S, E]
        cfg, (bsz, s, _) = self.cfg, x.shape
        nh = cfg.num_heads

        def heads(t):
            return t.view(bsz, s, nh, -1).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        i = softcap(self.igate_preact(x), cfg.gate_soft_cap).transpose(1, 2)
        f = softcap(self.fgate_preact(x), cfg.gate_soft_cap).transpose(1, 2)
        h = mlstm_zero_state(q, k, v, i, f, cfg.eps)
        h = self.multihead_norm(h)
        return self.out_proj(torch.sigmoid(self.ogate_preact(x)) * h)


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e, d = cfg.embedding_dim, cfg.ffn_dim
        self.proj_up_gate = nn.Linear(e, d, bias=False)
        self.proj_up = nn.Linear(e, d, bias=False)
        self.proj_down = nn.Linear(d, e, bias=False)

    def forward(self, x):
        return self.proj_down(F.silu(self.proj_up_gate(x)) * self.proj_up(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm_mlstm = RMSNorm(cfg.embedding_dim, cfg.norm_eps)
        self.mlstm_layer = MlstmLayer(cfg)
        self.norm_ffn = RMSNorm(cfg.embedding_dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x):
        x = x + self.mlstm_layer(self.norm_mlstm(x))
        return x + self.ffn(self.norm_ffn(x))


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_blocks))
        self.out_norm = RMSNorm(cfg.embedding_dim, cfg.norm_eps)


class XlstmLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.embedding_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        # Small-init / "wang" scheme of the xLSTM-Large code base: residual branches start
        # small so that a deep stack trains stably; the input gate starts closed (bias -10)
        # and the forget gates open (bias 3..6 across heads) for long memory.
        e, nb = self.cfg.embedding_dim, self.cfg.num_blocks
        small = math.sqrt(2.0 / (5.0 * e))
        wang = 2.0 / nb / math.sqrt(e)
        nn.init.normal_(self.backbone.embeddings.weight, std=small)
        for blk in self.backbone.blocks:
            lay = blk.mlstm_layer
            for lin in (lay.q, lay.k, lay.v, lay.ogate_preact, blk.ffn.proj_up_gate,
                        blk.ffn.proj_up):
                nn.init.normal_(lin.weight, std=small)
            for lin in (lay.out_proj, blk.ffn.proj_down):
                nn.init.normal_(lin.weight, std=wang)
            nn.init.zeros_(lay.igate_preact.weight)
            nn.init.zeros_(lay.fgate_preact.weight)
            nn.init.constant_(lay.igate_preact.bias, -10.0)
            with torch.no_grad():
                lay.fgate_preact.bias.copy_(torch.linspace(3.0, 6.0, self.cfg.num_heads))
        nn.init.normal_(self.lm_head.weight, std=small)

    def hidden(self, tokens):  # [B, S] -> normed hidden states [B, S, E]
        x = self.backbone.embeddings(tokens)
        for blk in self.backbone.blocks:
            x = blk(x)
        return self.backbone.out_norm(x)

    def head(self, h):  # [..., E] -> logits [..., V]
        return softcap(self.lm_head(h), self.cfg.output_logit_soft_cap)

    def forward(self, tokens):  # [B, S] -> logits [B, S, V]
        return self.head(self.hidden(tokens))
