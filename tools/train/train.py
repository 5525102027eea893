#!/usr/bin/env python3
"""Trains the demo chat model and exports it in the layout xlstmd loads.

    train.py --work DIR --out models/demo [--steps N] [--resume]

DIR holds corpus.py's train.jsonl / heldout.jsonl / NOTICE and bpe.py's tokenizer.json.
Conversations are laid out exactly as xlstmd's chat template feeds them (see
docs/chat-template.md and models/demo/chat_template.json):

    <|endoftext|>User: q1\\nAssistant: a1<|endoftext|>\\nUser: q2\\nAssistant: a2<|endoftext|>...

The session's BOS and each reply's stop token are both id 0; the server feeds the stop token
into the state and opens the next turn with the assistant suffix "\\n". The loss covers the
answers and their stop token only: the questions are the user's text, not the model's.
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import model as xmodel  # noqa: E402

EOT = 0
TEMPLATE = {
    "version": 1,
    "bos_policy": "session_start",
    "bos_token_ids": [EOT],
    "system": {"prefix": "", "suffix": "\n\n"},
    "user": {"prefix": "User: ", "suffix": "\n"},
    "assistant": {"prefix": "Assistant:", "suffix": "\n"},
    "default_system_prompt": "",
    "stop_token_ids": [EOT],
    "stop_strings": ["\nUser:"],
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def encode_stream(path, enc, rng, max_turns=4, only_src=None, skip_src=None):
    """Packs the pairs of `path` into one token stream of conversations of 1..max_turns
    turns; mask[t] = 1 where token t is a target the loss counts (answer or stop).
    `only_src`: keep only pairs from these sources; `skip_src`: drop these."""
    with open(path, encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f]
    if only_src:
        pairs = [p for p in pairs if p["src"] in only_src]
    if skip_src:
        pairs = [p for p in pairs if p["src"] not in skip_src]
    ids, mask = [], []
    i = 0
    while i < len(pairs):
        turns = rng.randint(1, max_turns)
        ids.append(EOT)
        mask.append(0)
        for t, p in enumerate(pairs[i: i + turns]):
            q = enc.encode(("\n" if t else "") + f"User: {p['q']}\nAssistant:")
            a = enc.encode(" " + p["a"]) + [EOT]
            ids += q + a
            mask += [0] * len(q) + [1] * len(a)
        i += turns
    return np.array(ids, dtype=np.int32), np.array(mask, dtype=np.uint8)


def windows(ids, mask, seq):
    """Non-overlapping [n, seq+1] windows (inputs are [:, :-1], targets [:, 1:])."""
    n = (len(ids) - 1) // seq
    x = np.lib.stride_tricks.as_strided(ids, (n, seq + 1), (seq * 4, 4))
    m = np.lib.stride_tricks.as_strided(mask, (n, seq + 1), (seq, 1))
    return torch.from_numpy(x.copy()).long(), torch.from_numpy(m.copy()).bool()


def masked_loss(net, x, m):
    """Mean cross-entropy over the target positions only. The LM head, soft cap and softmax
    run on those rows alone (a third of a window is questions): the same loss and gradients
    as scoring every position and masking, at two thirds of the vocabulary-sized work."""
    w = m[:, 1:]
    h = net.hidden(x[:, :-1])[w]
    n = int(w.sum())
    if n == 0:
        return h.sum() * 0.0, 0
    return F.cross_entropy(net.head(h), x[:, 1:][w]), n


@torch.no_grad()
def evaluate(net, xs, ms, batch):
    net.eval()
    total, count = 0.0, 0
    for s in range(0, len(xs), batch):
        x, m = xs[s: s + batch], ms[s: s + batch]
        loss, n = masked_loss(net, x, m)
        total += float(loss) * n
        count += n
    net.train()
    return total / max(count, 1), count


def unigram_loss(train_ids, train_mask, xs, ms, vocab):
    """Cross-entropy of a unigram model of the training targets (add-one smoothed) on the
    same held-out target positions the model is scored on."""
    counts = np.bincount(train_ids[1:][train_mask[1:] == 1], minlength=vocab).astype(np.float64)
    logp = np.log((counts + 1.0) / (counts.sum() + vocab))
    tgt = xs[:, 1:].numpy()[ms[:, 1:].numpy()]
    return float(-logp[tgt].mean())


def lr_at(step, steps, peak, warmup, restart_at=None):
    if restart_at is not None and step >= restart_at:
        # A second phase: cosine from `peak` to 10 % over [restart_at, steps], no warm-up.
        frac = (step - restart_at) / max(1, steps - restart_at)
        return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def write_safetensors(path, tensors):
    """bf16 safetensors (round to nearest even, as torch's .bfloat16() does)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.bfloat16).contiguous()
        raw = t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def reference_logits(net, enc, heldout_path):
    """Logits of the exported (bf16-rounded) weights on a held-out conversation, at a few KB:
    every position's top 8 ids plus 24 fixed ids, and each row's log-sum-exp."""
    p = json.loads(open(heldout_path, encoding="utf-8").readline())
    ids = [EOT] + enc.encode(f"User: {p['q']}\nAssistant:") + enc.encode(" " + p["a"])
    ids = ids[:40]
    rounded = xmodel.XlstmLM(net.cfg)
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in net.state_dict().items()})
    rounded.eval()
    with torch.no_grad():
        logits = rounded(torch.tensor([ids]))[0].double()
    fixed = sorted(random.Random(7).sample(range(net.cfg.vocab_size), 24))
    rows = []
    for r in range(len(ids)):
        top = torch.topk(logits[r], 8).indices.tolist()
        cols = sorted(set(top) | set(fixed))
        rows.append({"ids": cols, "logits": [round(float(logits[r, c]), 6) for c in cols],
                     "logsumexp": round(float(torch.logsumexp(logits[r], 0)), 6),
                     "argmax": int(torch.argmax(logits[r]))})
    return {"note": "float32 forward of tools/train/model.py on the bf16-rounded weights",
            "tokens": ids, "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=2200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--embedding-dim", type=int, default=256)
    ap.add_argument("--num-blocks", type=int, default=6)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--resume", action="store_true", help="continue from WORK/ckpt.pt")
    ap.add_argument("--export-only", action="store_true", help="export WORK/ckpt.pt and stop")
    ap.add_argument("--only-src", default="",
                    help="train on these pair sources only (comma-separated, e.g. wordnet)")
    ap.add_argument("--skip-src", default="",
                    help="leave these pair sources out of training (comma-separated)")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop (and checkpoint) at this step; the LR schedule still spans --steps")
    ap.add_argument("--restart-at", type=int, default=None,
                    help="with --resume: start a new cosine LR phase at this step")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    work = args.work
    enc = bpe.Encoder(os.path.join(work, "tokenizer.json"))
    vocab = len(enc.vocab)

    only = set(filter(None, args.only_src.split(",")))
    skip = set(filter(None, args.skip_src.split(",")))
    cache = "tokens"
    if only:
        cache += "-" + "-".join(sorted(only))
    if skip:
        cache += "-skip-" + "-".join(sorted(skip))
    cache = os.path.join(work, cache + ".npz")
    if os.path.exists(cache):
        z = np.load(cache)
        tr_ids, tr_mask, ho_ids, ho_mask = z["tr_ids"], z["tr_mask"], z["ho_ids"], z["ho_mask"]
    else:
        t0 = time.time()
        tr_ids, tr_mask = encode_stream(os.path.join(work, "train.jsonl"), enc, rng,
                                        only_src=only, skip_src=skip)
        ho_ids, ho_mask = encode_stream(os.path.join(work, "heldout.jsonl"), enc,
                                        random.Random(args.seed + 1))
        np.savez(cache, tr_ids=tr_ids, tr_mask=tr_mask, ho_ids=ho_ids, ho_mask=ho_mask)
        log(f"train: encoded {len(tr_ids)} train / {len(ho_ids)} held-out tokens "
            f"in {time.time() - t0:.0f} s")
    xs, ms = windows(tr_ids, tr_mask, args.seq)
    hx, hm = windows(ho_ids, ho_mask, args.seq)

    cfg = xmodel.Config(vocab, args.embedding_dim, args.num_blocks, args.num_heads)
    net = xmodel.XlstmLM(cfg)
    n_params = sum(p.numel() for p in net.parameters())
    decay = [p for n, p in net.named_parameters() if p.dim() == 2 and "embeddings" not in n]
    rest = [p for n, p in net.named_parameters() if not (p.dim() == 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    ckpt = os.path.join(work, "ckpt.pt")
    start, seconds = 0, 0.0
    order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(args.seed))
    if args.resume or args.export_only:
        st = torch.load(ckpt)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start, seconds, order = st["step"], st["seconds"], st["order"]
        if len(order) != len(xs):  # another data mix than the checkpoint's: a fresh order
            order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(args.seed + start))
    log_path = os.path.join(work, "train_log.tsv")
    if start == 0 and not args.export_only:
        with open(log_path, "w") as f:
            f.write("step\ttokens\tloss\tlr\ttokens_per_s\theldout_loss\n")
    log(f"train: {n_params / 1e6:.2f} M parameters, vocab {vocab}, {len(xs)} windows of "
        f"{args.seq} ({len(xs) * args.seq / 1e6:.1f} M tokens per epoch), {args.steps} steps "
        f"of {args.batch}, threads {torch.get_num_threads()}")

    step = start
    end = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    t_last, run_loss = time.time(), []
    while step < end and not args.export_only:
        lr = lr_at(step, args.steps, args.lr, args.warmup, args.restart_at)
        for g in opt.param_groups:
            g["lr"] = lr
        pos = (step * args.batch) % len(order)
        idx = order[pos: pos + args.batch]
        if len(idx) < args.batch:  # next epoch: a fresh order
            order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(args.seed + step))
            idx = order[: args.batch]
        x, m = xs[idx], ms[idx]
        loss, _ = masked_loss(net, x, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss.append(float(loss))
        if step % 25 == 0 or step == end:
            now = time.time()
            seconds += now - t_last
            tps = 25 * args.batch * args.seq / (now - t_last)
            t_last = now
            held = ""
            if step % args.eval_every == 0 or step == end:
                # A fixed slice of the held-out windows keeps the curve cheap; the
                # full held-out set is scored once, at export.
                held = f"{evaluate(net, hx[:128], hm[:128], 32)[0]:.4f}"
                t_last = time.time()
            mean = sum(run_loss) / len(run_loss)
            run_loss = []
            with open(log_path, "a") as f:
                f.write(f"{step}\t{step * args.batch * args.seq}\t{mean:.4f}\t{lr:.6f}\t"
                        f"{tps:.0f}\t{held}\n")
            log(f"step {step}/{args.steps} loss {mean:.4f} lr {lr:.2e} {tps:.0f} tok/s "
                f"{seconds / 60:.1f} min" + (f" held-out {held}" if held else ""))
            if step % 250 == 0 or step == end:
                torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step,
                            "seconds": seconds, "order": order}, ckpt + ".tmp")
                os.replace(ckpt + ".tmp", ckpt)

    # Export.
    os.makedirs(args.out, exist_ok=True)
    held_loss, held_count = evaluate(net, hx, hm, 32)
    uni = unigram_loss(tr_ids, tr_mask, hx, hm, vocab)
    write_safetensors(os.path.join(args.out, "model.safetensors"), net.state_dict())
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg.hf_config(), f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(args.out, "chat_template.json"), "w") as f:
        json.dump(TEMPLATE, f, indent=2)
        f.write("\n")
    shutil.copyfile(os.path.join(work, "tokenizer.json"), os.path.join(args.out, "tokenizer.json"))
    shutil.copyfile(os.path.join(work, "NOTICE"), os.path.join(args.out, "NOTICE"))
    with open(os.path.join(args.out, "reference_logits.json"), "w") as f:
        json.dump(reference_logits(net, enc, os.path.join(work, "heldout.jsonl")), f)
        f.write("\n")
    metrics = {
        "parameters": n_params, "steps": step, "batch": args.batch, "seq": args.seq,
        "tokens_seen": step * args.batch * args.seq,
        "train_tokens_per_epoch": int(len(xs) * args.seq),
        "training_minutes": round(seconds / 60, 1),
        "heldout_target_tokens": held_count,
        "heldout_loss": round(held_loss, 4), "heldout_ppl": round(math.exp(held_loss), 2),
        "unigram_loss": round(uni, 4), "unigram_ppl": round(math.exp(uni), 2),
        "ppl_ratio": round(math.exp(held_loss - uni), 4),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    with open(os.path.join(work, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    log("train: " + json.dumps(metrics))


if __name__ == "__main__":
    main()
