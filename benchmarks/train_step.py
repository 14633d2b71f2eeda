"""Benchmark: our training step versus the reference Yo'Chameleon scheme, at one model size.

    python benchmarks/train_step.py --size tiny        # hidden 128, 2 layers (seconds)
    python benchmarks/train_step.py --size mid         # hidden 1024, 8 layers, 65536 vocab (minutes)

Variants, each measured in its own process (so peak memory is its own), same batch:
  ours             rows-only AdamW, dynamic padding in length groups, cached VQ codes, logits only at targets
  ours+one-batch   ours, but the whole batch padded to its longest sample (no length groups)
  ours+pad1500     ours, but every sample padded to 1500 tokens
  ours+vq-encode   ours, but images re-encoded by the VQ model at every step
  reference        the official scheme: AdamW over the full 65536 x hidden embedding and output
                   matrices with every other row reverted after each step, padding to 1500,
                   VQ encoding every step, full-vocabulary logits at every position
Prints step time, forward time, peak memory (CUDA allocator on GPU, process RSS on CPU),
trainable parameters and optimizer-state bytes, and ratios against `ours`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {
    "tiny": {},
    "mid": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16},
}
VARIANTS = ["ours", "ours+one-batch", "ours+pad1500", "ours+vq-encode", "reference"]
PAD_TO = 1500


def peak_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure(variant: str, size: str, steps: int) -> dict:
    """Run one variant in this process and return its figures."""
    import torch
    import torch.nn.functional as F

    from yochameleon.concept.tokens import PersonalizedTokens
    from yochameleon.config import ASSET_DIR
    from yochameleon.data.images import load_image
    from yochameleon.data.samples import SampleBuilder, SampleSpec, collate
    from yochameleon.data.vq_cache import VQCodeCache
    from yochameleon.model.load import load_backbone
    from yochameleon.model.personalized import IGNORE_INDEX, PersonalizedChameleon
    from yochameleon.tiny.chameleon import default_cache_dir, ensure_tiny_checkpoint

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = load_backbone(ensure_tiny_checkpoint(default_cache_dir() / "models", SIZES[size]), name=size,
                             device=device)
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.vocabulary_map, "bench", 16, 16)
    tokens.to(device)
    photos = sorted((ASSET_DIR / "demo" / "corgi" / "train").glob("*.jpg"))
    builder = SampleBuilder(backbone, tokens, VQCodeCache(backbone, None), self_prompting=True, group_loss="group")
    specs = [SampleSpec("recognition", str(photos[0]), False, "Is <sks> in this photo?", "Yes, <sks> is here."),
             SampleSpec("recognition", str(photos[1]), False, "Is <sks> in this photo?", "Yes, it is <sks>."),
             SampleSpec("text_qa", None, False, "What is <sks>?", "<sks> is the subject of my photos."),
             SampleSpec("generation", str(photos[2]), False, "A photo of <sks>.")]
    samples = [builder.build(s) for s in specs]
    pad = backbone.tokenizer.pad_token_id
    if variant in ("ours+pad1500", "reference"):
        for s in samples:  # fixed-length padding, as the official dataset does
            extra = PAD_TO - len(s["input_ids"])
            s["input_ids"] = s["input_ids"] + [pad] * extra
            s["labels"] = s["labels"] + [IGNORE_INDEX] * extra
            s["weights"] = s["weights"] + [0.0] * extra
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in collate(samples, pad).items()}
    batch["attention_mask"] = (batch["input_ids"] != pad).long() if variant in ("ours+pad1500", "reference") \
        else batch["attention_mask"]
    pixels = backbone.processor.image_processor([load_image(p) for p in photos[:3]], return_tensors="pt")[
        "pixel_values"].to(device)
    encode_each_step = variant in ("ours+vq-encode", "reference")

    model = backbone.model
    if variant == "reference":
        emb, head = model.get_input_embeddings().weight, model.lm_head.weight
        emb.requires_grad_(True)
        head.requires_grad_(True)
        params = [emb, head]
        keep = torch.ones(emb.shape[0], dtype=torch.bool, device=device)
        keep[tokens.token_ids] = False
        original = (emb.detach()[keep].clone(), head.detach()[keep].clone())
    else:
        wrapped = PersonalizedChameleon(model, [tokens], group_ratio(variant))
        params = list(tokens.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def forward():
        if encode_each_step:
            backbone.encode_images(pixels)  # the official code re-tokenizes every image every step
        if variant == "reference":
            hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            logits = model.lm_head(hidden[:, :-1]).float()  # full vocabulary at every position
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return wrapped(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["weights"])["loss"]

    def step():
        loss = forward()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if variant == "reference":
            with torch.no_grad():  # revert every row that is not a concept token
                emb[keep] = original[0]
                head[keep] = original[1]

    def timed(fn, n):
        times = []
        for _ in range(n):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    step()  # warm-up (also creates the optimizer state)
    step_time = timed(step, steps)
    with torch.no_grad():
        forward_time = timed(forward, steps)
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    return {"variant": variant, "size": size, "device": device.type, "step_s": step_time, "forward_s": forward_time,
            "peak_bytes": peak_bytes(device), "trainable_params": sum(p.numel() for p in params),
            "optimizer_state_bytes": state_bytes, "tokens_per_batch": computed_tokens(batch, variant)}


def group_ratio(variant: str) -> float:
    """Length groups for our variants; one padded batch where padding is what is measured."""
    return 0.0 if variant in ("ours+one-batch", "ours+pad1500", "reference") else 0.5


def computed_tokens(batch, variant: str) -> int:
    """Token positions the model runs: the padded batch, or the sum over its length groups."""
    from yochameleon.model.personalized import length_groups

    if not group_ratio(variant):
        return int(batch["input_ids"].numel())
    lengths = batch["attention_mask"].sum(1).tolist()
    return sum(len(rows) * max(lengths[r] for r in rows) for rows in length_groups(lengths, group_ratio(variant)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.size, args.steps)))
        return
    rows = []
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--size", args.size, "--steps", str(args.steps),
                              "--variant", variant], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"size={args.size} device={base['device']} batch=4 (2 recognition, 1 text QA, 1 generation), "
          f"median of {args.steps} steps; peak memory = {'CUDA allocator' if base['device'] == 'cuda' else 'process RSS'}")
    print(f"{'variant':16s} {'step s':>8s} {'x ours':>7s} {'step/fwd':>8s} {'peak MiB':>9s} {'x ours':>7s} "
          f"{'tokens':>7s} {'trainable':>11s} {'optim MiB':>10s}")
    for r in rows:
        print(f"{r['variant']:16s} {r['step_s']:8.3f} {r['step_s'] / base['step_s']:7.2f} "
              f"{r['step_s'] / r['forward_s']:8.2f} {r['peak_bytes'] / 2**20:9.0f} "
              f"{r['peak_bytes'] / base['peak_bytes']:7.2f} {r['tokens_per_batch']:7d} {r['trainable_params']:11,d} "
              f"{r['optimizer_state_bytes'] / 2**20:10.2f}")


if __name__ == "__main__":
    main()
