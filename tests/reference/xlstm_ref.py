#!/usr/bin/python3
"""Independent numpy reference for the two xLSTM model families (float64, step form).

Written from ../shared/xlstm-spec.md and the golden files only; it shares no code with the
C++ engine, so the two can be compared against each other (differential testing).

  family A  "xLSTM-Large"  (config model_type "xlstm")        spec section 3
  family B  paper xLSTM LM (config model_type "xlstm-paper")  spec section 4

API: load_model(dir) -> model; model.run(tokens, state=None) -> (logits [T, V], state dict),
all float64; model.zero_state(); greedy(model, prompt, n); read_safetensors(path);
load_weights(dir); check_golden(root) -> number of failed checks.

The recurrences (mLSTM cell, sLSTM cell, conv window) run one token at a time, exactly the
spec's recurrent steps (2.1, 4.4). Non-recurrent parts (norms, projections, FFN) are applied
to all tokens of a call at once, layer by layer: the same math, since each position depends
only on itself and the carried state. A run split in two with the state carried = one run.

Command line:
  xlstm_ref.py --check-golden /path/to/shared/golden
  xlstm_ref.py --model DIR --tokens 1,2,3 [--split-at K] [--state-in S.npz] --out FILE.npz
"""
import argparse
import glob
import json
import math
import os
import struct
import sys

import numpy as np

# ------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, raw little-endian data.

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = blob[base + begin:base + end]
        dt = info["dtype"]
        if dt == "BF16":
            # bf16 is the upper half of a float32: widen exactly by shifting into place.
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in _DTYPES:
            a = np.frombuffer(raw, dtype=_DTYPES[dt])
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        out[name] = a.reshape(info["shape"]).copy()
    return out


def load_weights(model_dir):
    """model.safetensors, or the shards named by model.safetensors.index.json, or upstream's
    plain-loader pattern model_{n}.safetensors (spec 3.3). Floats become float64."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(single):
        files = ["model.safetensors"]
    else:
        files = sorted(os.path.basename(p)
                       for p in glob.glob(os.path.join(model_dir, "model_*.safetensors")))
        if not files:
            raise FileNotFoundError(f"{model_dir}: no model.safetensors / index / shards")
    w = {}
    for fn in files:
        for k, a in read_safetensors(os.path.join(model_dir, fn)).items():
            w[k] = a.astype(np.float64) if a.dtype.kind == "f" else a
    return w


class Weights:
    """Name lookup with alternatives and clear errors."""

    def __init__(self, tensors, model_dir):
        self.t, self.dir = tensors, model_dir

    def get(self, *names):
        for n in names:
            if n in self.t:
                return self.t[n]
        raise KeyError(f"{self.dir}: none of the tensors {list(names)} is in the checkpoint")

    def opt(self, name):
        return self.t.get(name)

    def linear(self, *prefixes):
        """(W, b) of a linear or norm module; b = its `.bias` if the checkpoint has one."""
        for p in prefixes:
            if p + ".weight" in self.t:
                return self.t[p + ".weight"], self.t.get(p + ".bias")
        raise KeyError(f"{self.dir}: none of {[p + '.weight' for p in prefixes]} found")


# ------------------------------------------------------------------------------------------
# Shared primitives (spec section 1).

def softcap(x, c):
    return x if c is None else c * np.tanh(x / c)


def logsigmoid(x):
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def sigmoid(x):
    # exp of a non-positive argument only, so no overflow warnings for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def silu(x):
    return x * sigmoid(x)


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    # Exact erf form (PyTorch default), not the tanh approximation (spec 1, 8.6).
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def selu(x):
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


# Family-B FFN activations, by the config's act_fn names.
ACTS = {"gelu": gelu, "swish": silu, "silu": silu, "relu": lambda x: np.maximum(x, 0.0),
        "relu^2": lambda x: np.square(np.maximum(x, 0.0)), "sigmoid": sigmoid, "selu": selu}


def linear(x, Wb):
    return x @ Wb[0].T if Wb[1] is None else x @ Wb[0].T + Wb[1]


def split_rows(Wb, sizes):
    """Row-split a fused (W, b) into consecutive parts of the given sizes."""
    cuts = np.cumsum(sizes)[:-1]
    bs = [None] * len(sizes) if Wb[1] is None else np.split(Wb[1], cuts)
    return list(zip(np.split(Wb[0], cuts), bs))


def headwise(x, W, b=None):
    """Block-diagonal linear (spec 4.2): W [P, O, I], x [T, P*I] -> [T, P*O]."""
    P, O, I = W.shape
    y = np.einsum("poi,tpi->tpo", W, x.reshape(x.shape[0], P, I)).reshape(x.shape[0], P * O)
    return y if b is None else y + b


def affine(y, sb):
    """y * scale (+ bias when the checkpoint has one)."""
    return y * sb[0] if sb[1] is None else y * sb[0] + sb[1]


def rmsnorm(x, sb, eps):
    return affine(x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps), sb)


def ln0(x, eps):
    """LayerNorm without affine over the last dim, biased variance."""
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def headwise_ln0(h, nh, eps):
    """Per-head LN0 of [T, nh*dh] (head-major), concatenated back to [T, nh*dh]."""
    T = h.shape[0]
    return ln0(h.reshape(T, nh, -1), eps).reshape(T, -1)


def mlstm_scan(q, k, v, i, f, C, n, m, eps):
    """The recurrent mLSTM step (spec 2.1) over T tokens, all heads at once.

    q, k [T, NH, DQK], v [T, NH, DV], i, f [T, NH]; q / k already scaled as the family
    requires (A scales q, B scales k). C [NH, DQK, DV], n [NH, DQK], m [NH].
    Returns H [T, NH, DV] and the new (C, n, m)."""
    T = q.shape[0]
    H = np.empty((T,) + v.shape[1:])
    lf = logsigmoid(f)
    for t in range(T):
        m_new = np.maximum(lf[t] + m, i[t])
        fa = np.exp(lf[t] + m - m_new)           # both arguments <= 0 by construction
        ia = np.exp(i[t] - m_new)
        C = fa[:, None, None] * C + ia[:, None, None] * (k[t][:, :, None] * v[t][:, None, :])
        n = fa[:, None] * n + ia[:, None] * k[t]
        m = m_new
        num = np.einsum("hd,hdv->hv", q[t], C)
        # eps is added after the max (spec 2.1, 8.3); exp(-m) may be subnormal, harmless.
        den = np.maximum(np.abs(np.sum(q[t] * n, axis=-1)), np.exp(-m)) + eps
        H[t] = num / den[:, None]
    return H, C, n, m


class _Model:
    def run(self, tokens, state=None):
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab):
            raise ValueError(f"token id out of range [0, {self.vocab})")
        st = self.zero_state()
        if state is not None:
            for key in st:
                if key not in state:
                    raise KeyError(f"state lacks {key}")
                # Same number of elements required; a [NH,1] m or [NH,DH,1] n is accepted.
                st[key] = np.asarray(state[key], dtype=np.float64).reshape(st[key].shape).copy()
        return self._forward(self.emb[tokens], st), st


# ------------------------------------------------------------------------------------------
# Family A: xLSTM-Large (spec section 3).

class XLSTMLarge(_Model):
    def __init__(self, cfg, w):
        self.cfg = cfg
        E = cfg.get("embedding_dim", cfg.get("hidden_size"))             # HF alias
        self.nblocks = cfg.get("num_blocks", cfg.get("num_hidden_layers"))
        self.NH = cfg["num_heads"]
        self.norm_eps, self.eps = cfg.get("norm_eps", 1e-6), cfg.get("eps", 1e-6)
        # null or absent cap = no cap (project convention; note upstream's dataclass would
        # default an absent field to 15 / 30, but the configs we read always carry it).
        self.gate_cap = cfg.get("gate_soft_cap")
        self.logit_cap = cfg.get("output_logit_soft_cap")
        mode = cfg.get("weight_mode", "single")
        if mode not in ("single", "fused"):
            raise NotImplementedError(f"weight_mode {mode!r}")
        # HF export name and upstream plain-module name of the embedding (spec 3.3).
        self.emb = w.get("backbone.embeddings.weight", "embedding.weight")
        self.vocab = self.emb.shape[0]
        if E is not None and self.emb.shape[1] != E:
            raise ValueError(f"embedding width {self.emb.shape[1]} != embedding_dim {E}")
        self.blocks = []
        for b in range(self.nblocks):
            p = f"backbone.blocks.{b}."
            ml = p + "mlstm_layer."
            blk = {"norm_mlstm": w.linear(p + "norm_mlstm"), "norm_ffn": w.linear(p + "norm_ffn"),
                   "mh_norm": w.linear(ml + "multihead_norm"),   # (weight, bias) as a linear
                   "out_proj": w.linear(ml + "out_proj"),
                   "down": w.linear(p + "ffn.proj_down")}
            v_dim = blk["mh_norm"][0].shape[0]
            if mode == "single":
                blk["q"] = w.linear(ml + "q", ml + "query")
                blk["k"] = w.linear(ml + "k", ml + "key")
                blk["v"] = w.linear(ml + "v", ml + "value")
                blk["o"] = w.linear(ml + "ogate_preact")
                blk["i"] = w.linear(ml + "igate_preact")
                blk["f"] = w.linear(ml + "fgate_preact")
                blk["gate"] = w.linear(p + "ffn.proj_up_gate")
                blk["up"] = w.linear(p + "ffn.proj_up")
            else:
                # Fused rows: (q, k, v, ogate), (igate, fgate), (gate, up)  (spec 3.3).
                # v_dim from the norm weight; qk_dim is what remains of the fused rows.
                Wb = w.linear(ml + "qkv_opreact")
                qk = (Wb[0].shape[0] - 2 * v_dim) // 2
                blk["q"], blk["k"], blk["v"], blk["o"] = split_rows(Wb, [qk, qk, v_dim, v_dim])
                blk["i"], blk["f"] = split_rows(w.linear(ml + "ifgate_preact"), [self.NH] * 2)
                Wb = w.linear(p + "ffn.proj_up_gate_z")
                blk["gate"], blk["up"] = split_rows(Wb, [Wb[0].shape[0] // 2] * 2)
            # Dims from the weight shapes (spec 3.1 trap: int(E*factor), never rounded up).
            qk_dim = blk["q"][0].shape[0]
            if blk["i"][0].shape[0] != self.NH or qk_dim % self.NH or v_dim % self.NH:
                raise ValueError(f"block {b}: dims qk {qk_dim} v {v_dim} vs {self.NH} heads")
            if blk["k"][0].shape[0] != qk_dim or blk["v"][0].shape[0] != v_dim:
                raise ValueError(f"block {b}: q/k/v shapes disagree")
            self.DQK, self.DV = qk_dim // self.NH, v_dim // self.NH
            self.blocks.append(blk)
        self.out_norm = w.linear("backbone.out_norm") if cfg.get("add_out_norm", True) else None
        tied = cfg.get("tie_word_embeddings", False)
        self.lm = (self.emb, None) if tied else w.linear("lm_head")

    def zero_state(self):
        st = {}
        for b in range(self.nblocks):
            st[f"state/block_{b}/C"] = np.zeros((self.NH, self.DQK, self.DV))
            st[f"state/block_{b}/n"] = np.zeros((self.NH, self.DQK))
            st[f"state/block_{b}/m"] = np.zeros(self.NH)
        return st

    def _forward(self, x, st):
        T, NH, eps_n = x.shape[0], self.NH, self.norm_eps
        for b, blk in enumerate(self.blocks):
            h = rmsnorm(x, blk["norm_mlstm"], eps_n)
            q = linear(h, blk["q"]).reshape(T, NH, -1) / math.sqrt(self.DQK)   # A scales q
            k = linear(h, blk["k"]).reshape(T, NH, -1)
            v = linear(h, blk["v"]).reshape(T, NH, -1)
            o = linear(h, blk["o"])
            it = softcap(linear(h, blk["i"]), self.gate_cap)
            ft = softcap(linear(h, blk["f"]), self.gate_cap)
            key = f"state/block_{b}/"
            H, st[key + "C"], st[key + "n"], st[key + "m"] = mlstm_scan(
                q, k, v, it, ft, st[key + "C"], st[key + "n"], st[key + "m"], self.eps)
            # Per-head LayerNorm (mean-subtracted, not RMS), then weight (+ bias).
            hn = affine(headwise_ln0(H.reshape(T, -1), NH, eps_n), blk["mh_norm"])
            x = x + linear(sigmoid(o) * hn, blk["out_proj"])
            h2 = rmsnorm(x, blk["norm_ffn"], eps_n)
            x = x + linear(silu(linear(h2, blk["gate"])) * linear(h2, blk["up"]), blk["down"])
        if self.out_norm is not None:
            x = rmsnorm(x, self.out_norm, eps_n)
        return softcap(linear(x, self.lm), self.logit_cap)


# ------------------------------------------------------------------------------------------
# Family B: paper xLSTM LM (spec section 4).

LN_EPS_B = 1e-5     # every family-B LayerNorm / group norm (spec 1, 8.6)
CELL_EPS_B = 1e-6   # mLSTM denominator eps, hard-coded upstream (spec 2.5)


def affine_ln(x, sb):
    return affine(ln0(x, LN_EPS_B), sb)


def causal_conv(x, window, W, bias):
    """Depthwise causal conv (spec 4.2) over T tokens from a window of the previous KS-1
    inputs (oldest first). W [D, 1, KS]. Returns (y [T, D], new window [KS-1, D])."""
    KS = W.shape[2]
    full = np.concatenate([window, x], axis=0)          # [KS-1+T, D]
    T = x.shape[0]
    y = np.zeros_like(x) if bias is None else np.broadcast_to(bias, x.shape).copy()
    for j in range(KS):
        y += W[:, 0, j] * full[j:j + T]
    return y, full[full.shape[0] - (KS - 1):].copy()


class XLSTMPaper(_Model):
    def __init__(self, cfg, w):
        self.cfg = cfg
        E = cfg["embedding_dim"]
        self.nblocks = cfg["num_blocks"]
        at = cfg.get("slstm_at") or []
        # Upstream also allows slstm_at = "all" (the golden config uses a list).
        self.slstm_at = set(range(self.nblocks)) if at == "all" else set(at)
        if not self.slstm_at <= set(range(self.nblocks)):
            raise ValueError(f"slstm_at {at} outside {self.nblocks} blocks")
        self.emb = w.get("token_embedding.weight")
        self.vocab = self.emb.shape[0]
        if self.emb.shape[1] != E:
            raise ValueError(f"embedding width {self.emb.shape[1]} != embedding_dim {E}")
        mcfg = ((cfg.get("mlstm_block") or {}).get("mlstm")) or {}
        scfg = ((cfg.get("slstm_block") or {}).get("slstm")) or {}
        fcfg = ((cfg.get("slstm_block") or {}).get("feedforward")) or {}
        layout = cfg.get("slstm_weight_layout") or scfg.get("backend") or "cuda"
        if layout not in ("cuda", "vanilla"):
            raise NotImplementedError(f"sLSTM weight layout {layout!r}")
        self.blocks = []
        for b in range(self.nblocks):
            p = f"xlstm_block_stack.blocks.{b}."
            xp = p + "xlstm."
            blk = {"norm": self._ln(w, p + "xlstm_norm")}
            if b in self.slstm_at:
                blk["type"] = "slstm"
                # Heads from the gate weight [NH_s, DHs, DHs]; must agree with the config.
                NH = w.get(xp + "fgate.weight").shape[0]
                if scfg.get("num_heads", NH) != NH or E % NH:
                    raise ValueError(f"block {b}: sLSTM heads {NH} vs config / E {E}")
                blk["NH"], blk["DH"] = NH, E // NH
                blk["conv"] = self._conv(w, xp, scfg.get("conv1d_kernel_size"), E, b)
                # Gate projections; upstream name swap: "fgate" feeds i, "igate" feeds f.
                for gate, mod in (("i", "fgate"), ("f", "igate"), ("z", "zgate"), ("o", "ogate")):
                    blk[gate] = w.linear(xp + mod)
                K = w.get(xp + "slstm_cell._recurrent_kernel_")
                B = w.get(xp + "slstm_cell._bias_")
                D = E // NH
                if K.shape != ((NH, D, 4 * D) if layout == "cuda" else (NH, 4 * D, D)):
                    raise ValueError(f"block {b}: {layout} recurrent kernel shape {K.shape}")
                # To the logical R[j, d_in, g, d_out] and bias[j, g, u] (spec 4.4 table).
                if layout == "cuda":    # K[j, d_in, g*D + d_out]; bias (head, gate, unit)
                    blk["R"], blk["B"] = K.reshape(NH, D, 4, D), B.reshape(NH, 4, D)
                else:                   # K[j, g*D + d_out, d_in]; bias (gate, head, unit)
                    blk["R"] = K.reshape(NH, 4, D, D).transpose(0, 3, 1, 2)
                    blk["B"] = B.reshape(4, NH, D).transpose(1, 0, 2)
                # group_norm_weight false: the per-head norm has no weight, scale 1.
                blk["gn"] = (self._ln(w, xp + "group_norm") if scfg.get("group_norm_weight", True)
                             else (1.0, w.opt(xp + "group_norm.bias")))
                blk["ffn_norm"] = self._ln(w, p + "ffn_norm")
                act, fft = fcfg.get("act_fn", "gelu"), fcfg.get("ff_type", "ffn_gated")
                if act not in ACTS or fft != "ffn_gated":
                    raise NotImplementedError(f"FFN act_fn {act!r} / ff_type {fft!r}")
                blk["act"] = ACTS[act]
                blk["ff_up"] = w.linear(p + "ffn.proj_up")
                blk["ff_down"] = w.linear(p + "ffn.proj_down")
            else:
                blk["type"] = "mlstm"
                blk["up"] = w.linear(xp + "proj_up")
                Din = blk["up"][0].shape[0] // 2
                # Heads from the gate weight [NH, 3*Din]; must agree with the config.
                NH = w.get(xp + "mlstm_cell.igate.weight").shape[0]
                if mcfg.get("num_heads", NH) != NH or Din % NH:
                    raise ValueError(f"block {b}: mLSTM heads {NH} vs config / Din {Din}")
                blk["NH"], blk["DH"], blk["Din"] = NH, Din // NH, Din
                ks = mcfg.get("conv1d_kernel_size")
                if ks == 0 or w.opt(xp + "conv1d.conv.weight") is None:
                    # Spec 4.3 only defines xc = silu(conv1d(xm)); a conv-less mLSTM is not
                    # described, so do not guess whether SiLU still applies.
                    raise NotImplementedError("mLSTM block without causal conv "
                                              "(conv1d_kernel_size 0): not in the spec")
                blk["conv"] = self._conv(w, xp, ks, Din, b)
                for name in ("q", "k", "v"):
                    blk[name] = w.linear(xp + name + "_proj")
                blk["ig"] = w.linear(xp + "mlstm_cell.igate")
                blk["fg"] = w.linear(xp + "mlstm_cell.fgate")
                blk["outnorm"] = self._ln(w, xp + "mlstm_cell.outnorm")
                blk["skip"] = w.get(xp + "learnable_skip")
                blk["down"] = w.linear(xp + "proj_down")
            self.blocks.append(blk)
        self.post_norm = (self._ln(w, "xlstm_block_stack.post_blocks_norm")
                          if cfg.get("add_post_blocks_norm", True) else None)
        self.lm = (self.emb, None) if cfg.get("tie_weights", False) else w.linear("lm_head")

    @staticmethod
    def _ln(w, prefix):
        """Family-B norm parameters: scale = 1 + weight (offset form), optional bias."""
        return (1.0 + w.get(prefix + ".weight"), w.opt(prefix + ".bias"))

    @staticmethod
    def _conv(w, xp, ks_cfg, D, b):
        """(weight, bias) of a causal conv, or None for kernel size 0. The kernel size is
        the weight's last dim; a config value, when given, must agree with it."""
        Wc = w.opt(xp + "conv1d.conv.weight")
        if Wc is None and not ks_cfg:
            return None
        if ks_cfg is None and Wc is not None:
            ks_cfg = Wc.shape[2]
        if Wc is None or Wc.shape != (D, 1, ks_cfg) or ks_cfg < 1:
            raise ValueError(f"block {b}: conv weight {None if Wc is None else Wc.shape} "
                             f"!= config kernel size {ks_cfg} for width {D}")
        return (Wc, w.opt(xp + "conv1d.conv.bias"))

    def zero_state(self):
        st = {}
        for b, blk in enumerate(self.blocks):
            key = f"state/block_{b}/"
            NH, DH = blk["NH"], blk["DH"]
            if blk["type"] == "mlstm":
                st[key + "mlstm/C"] = np.zeros((NH, DH, DH))
                st[key + "mlstm/n"] = np.zeros((NH, DH))
                st[key + "mlstm/m"] = np.zeros(NH)
            else:
                st.update({key + "slstm/" + s: np.zeros(NH * DH) for s in "hcnm"})
            if blk["conv"] is not None:       # conv weight [width, 1, KS] -> window [KS-1, width]
                Wc = blk["conv"][0]
                st[key + "conv"] = np.zeros((Wc.shape[2] - 1, Wc.shape[0]))
        return st

    def _forward(self, x, st):
        for b, blk in enumerate(self.blocks):
            key = f"state/block_{b}/"
            run = self._mlstm_block if blk["type"] == "mlstm" else self._slstm_block
            x = run(x, blk, st, key)
        if self.post_norm is not None:
            x = affine_ln(x, self.post_norm)
        return linear(x, self.lm)                # no logit soft cap in family B

    def _mlstm_block(self, x, blk, st, key):
        T, NH, DH, Din = x.shape[0], blk["NH"], blk["DH"], blk["Din"]
        up = linear(affine_ln(x, blk["norm"]), blk["up"])
        xm, z = up[:, :Din], up[:, Din:]                      # xm first half, z second
        xconv, st[key + "conv"] = causal_conv(xm, st[key + "conv"], *blk["conv"])
        xc = silu(xconv)
        q = headwise(xc, *blk["q"])
        k = headwise(xc, *blk["k"])
        v = headwise(xm, *blk["v"])                           # v from the pre-conv branch
        g_in = np.concatenate([q, k, v], axis=1)
        it, ft = linear(g_in, blk["ig"]), linear(g_in, blk["fg"])   # no cap in family B
        H, st[key + "mlstm/C"], st[key + "mlstm/n"], st[key + "mlstm/m"] = mlstm_scan(
            q.reshape(T, NH, DH), k.reshape(T, NH, DH) / math.sqrt(DH),   # B scales k
            v.reshape(T, NH, DH), it, ft,
            st[key + "mlstm/C"], st[key + "mlstm/n"], st[key + "mlstm/m"], CELL_EPS_B)
        hn = affine(headwise_ln0(H.reshape(T, Din), NH, LN_EPS_B), blk["outnorm"])
        hs = hn + blk["skip"] * xc                            # skip uses post-conv SiLU xc
        return x + linear(hs * silu(z), blk["down"])

    def _slstm_block(self, x, blk, st, key):
        T, NH, D = x.shape[0], blk["NH"], blk["DH"]
        xn = affine_ln(x, blk["norm"])
        if blk["conv"] is not None:
            xconv, st[key + "conv"] = causal_conv(xn, st[key + "conv"], *blk["conv"])
            xc = silu(xconv)
        else:
            xc = xn                                            # KS 0: no conv, no SiLU
        # Gate inputs, order i, f, z, o: i, f from the conv branch, z, o from the normed input.
        gx = np.stack([headwise(xc, *blk["i"]), headwise(xc, *blk["f"]),
                       headwise(xn, *blk["z"]), headwise(xn, *blk["o"])], axis=1)
        gx = gx.reshape(T, 4, NH, D).transpose(0, 2, 1, 3) + blk["B"]   # [T, NH, 4, D]
        R = blk["R"]
        h, c, n, m = (st[key + "slstm/" + s] for s in "hcnm")
        Hs = np.empty((T, NH * D))
        for t in range(T):
            raw = gx[t] + np.einsum("jd,jdgu->jgu", h.reshape(NH, D), R)
            i_r, f_r, z_r, o_r = (raw[:, g].reshape(-1) for g in range(4))
            lfm = m + logsigmoid(f_r)
            # Fresh unit (n == 0): m = i; tested per unit, never across sessions.
            m_new = np.where(n == 0.0, i_r, np.maximum(i_r, lfm))
            with np.errstate(over="ignore"):
                ia = np.minimum(np.exp(i_r - m_new), 1.0)
                fa = np.minimum(np.exp(lfm - m_new), 1.0)
            c = fa * c + ia * np.tanh(z_r)
            n = fa * n + ia
            h = sigmoid(o_r) * c / n                          # no eps
            m = m_new
            Hs[t] = h
        st[key + "slstm/h"], st[key + "slstm/c"] = h, c
        st[key + "slstm/n"], st[key + "slstm/m"] = n, m
        x = x + affine(headwise_ln0(Hs, NH, LN_EPS_B), blk["gn"])
        up = linear(affine_ln(x, blk["ffn_norm"]), blk["ff_up"])
        F = up.shape[1] // 2
        return x + linear(blk["act"](up[:, :F]) * up[:, F:], blk["ff_down"])  # gate first


# ------------------------------------------------------------------------------------------

def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = Weights(load_weights(model_dir), model_dir)
    mt = cfg.get("model_type")
    if mt == "xlstm":
        return XLSTMLarge(cfg, w)
    if mt == "xlstm-paper":
        return XLSTMPaper(cfg, w)
    raise NotImplementedError(f"{model_dir}: model_type {mt!r}")


def greedy(model, prompt_ids, n):
    """Prompt, then feed back the argmax n-1 times; returns the n generated ids."""
    logits, st = model.run(prompt_ids)
    out = []
    for _ in range(n):
        tok = int(np.argmax(logits[-1]))
        out.append(tok)
        if len(out) < n:
            logits, st = model.run([tok], st)
    return out


# ------------------------------------------------------------------------------------------
# Golden check.

def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)) if b.size else 0.0


def _state_checks(mine, gold_all, gprefix, label):
    """Compares one golden state group; yields (label, err, tol, ok)."""
    worst = {}
    gkeys = [k for k in gold_all if k.startswith(gprefix)]
    mkeys = set("state/" + k[len(gprefix):] for k in gkeys)
    missing = sorted(set(mine) ^ mkeys)
    if missing:
        yield (f"{label} state names differ: {missing}", float("nan"), 0.0, False)
    for gk in sorted(gkeys):
        mk = "state/" + gk[len(gprefix):]
        if mk not in mine:
            continue
        g, a = gold_all[gk].astype(np.float64), mine[mk]
        kind = mk.split("/", 2)[2]                   # C, n, m, mlstm/C, slstm/h, conv
        if kind == "conv":
            g = g[g.shape[0] - a.shape[0]:]          # golden keeps KS rows, we keep KS-1
        g = g.reshape(a.shape)
        # m (mLSTM and sLSTM stabilisers): absolute; everything else relative to its max.
        err = float(np.max(np.abs(a - g))) if mk.endswith("/m") else _rel(a, g)
        if err >= worst.get(kind, (-1.0,))[0]:
            worst[kind] = (err, mk)
    for kind, (err, mk) in sorted(worst.items()):
        how = "abs" if mk.endswith("/m") else "rel"
        yield (f"{label} {kind} ({how}, worst {mk})", err, 1e-4, err <= 1e-4)


def check_golden(root):
    failures = 0
    dirs = sorted(d for d in glob.glob(os.path.join(root, "*"))
                  if os.path.exists(os.path.join(d, "golden.json")))
    if not dirs:
        print(f"no golden dirs under {root}")
        return 1
    for d in dirs:
        name = os.path.basename(d)
        with open(os.path.join(d, "golden.json")) as f:
            meta = json.load(f)
        gold = read_safetensors(os.path.join(d, meta.get("golden", "golden.safetensors")))
        model = load_model(d)
        atol = float(meta["suggested_tolerance"]["logits_atol"])
        checks = []
        for seq in meta["sequences"]:
            s = seq["name"]
            toks = gold[s + "/tokens"].astype(np.int64)
            if list(toks) != list(seq["token_ids"]):
                checks.append((f"{s} tokens match golden.json", float("nan"), 0.0, False))
            logits, st = model.run(toks)
            for which in ("logits_full", "logits_step"):
                err = float(np.max(np.abs(logits - gold[f"{s}/{which}"])))
                checks.append((f"{s} {which}", err, atol, err <= atol))
            checks += _state_checks(st, gold, f"{s}/state/", f"{s} state")
            split = seq.get("split")
            if split:
                l1, s1 = model.run(toks[:split])
                l2, s2 = model.run(toks[split:], s1)
                err = float(np.max(np.abs(np.concatenate([l1, l2]) - gold[f"{s}/logits_turns"])))
                checks.append((f"{s} logits_turns (split {split})", err, atol, err <= atol))
                checks += _state_checks(s1, gold, f"{s}/state_after_turn1/", f"{s} turn1")
                checks += _state_checks(s2, gold, f"{s}/state/", f"{s} turn2-final")
        g = meta["greedy"]
        ids = greedy(model, g["prompt_ids"], len(g["generated_ids"]))
        same = ids == list(g["generated_ids"])
        checks.append((f"greedy {len(ids)} ids identical", 0.0 if same else 1.0, 0.0, same))
        for label, err, tol, ok in checks:
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {label}: max err {err:.3e} "
                  f"(tol {tol:.3e})")
    print(f"{'PASS' if failures == 0 else 'FAIL'}: {failures} failed checks")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check-golden", metavar="GOLDEN_ROOT")
    ap.add_argument("--model", metavar="DIR")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--split-at", type=int, default=None,
                    help="run tokens[:K] then tokens[K:] from the carried state")
    ap.add_argument("--state-in", help="npz with a starting state (default: zero state)")
    ap.add_argument("--out", help="npz: logits, state/..., and state_after_turn1/... if split")
    args = ap.parse_args()
    if args.check_golden:
        return 1 if check_golden(args.check_golden) else 0
    if not (args.model and args.tokens is not None and args.out):
        ap.error("need --check-golden, or --model, --tokens and --out")
    toks = [int(t) for t in args.tokens.split(",") if t.strip()]
    model = load_model(args.model)
    state = dict(np.load(args.state_in)) if args.state_in else None
    out = {}
    if args.split_at is not None:
        l1, s1 = model.run(toks[:args.split_at], state)
        l2, st = model.run(toks[args.split_at:], s1)
        logits = np.concatenate([l1, l2])
        out.update({"state_after_turn1/" + k[len("state/"):]: v for k, v in s1.items()})
    else:
        logits, st = model.run(toks, state)
    out["logits"] = logits
    out.update(st)
    np.savez(args.out, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
