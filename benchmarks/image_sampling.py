"""Benchmark: image-token sampling with the KV cache versus recomputing the whole sequence per token.

    python benchmarks/image_sampling.py [--model tiny|janus-tiny] [--images 2] [--repeats 2]

Both ways run in this one process on a tiny model (Chameleon, or Janus through its generation
head) with the same prompts and
greedy decoding (so they must produce identical tokens, which is checked); the
figure to quote is the ratio, absolute tokens/s on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from yochameleon.concept.tokens import PersonalizedTokens  # noqa: E402
from yochameleon.data.samples import SampleBuilder  # noqa: E402
from yochameleon.model.image_generation import SamplingConfig, sample_image_tokens  # noqa: E402
from yochameleon.model.load import load_backbone  # noqa: E402
from yochameleon.model.personalized import PersonalizedChameleon  # noqa: E402
from yochameleon.sources import resolve_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, help="images sampled together (batch)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="tiny", choices=["tiny", "janus-tiny"], help="the backbone source")
    args = parser.parse_args()

    backbone = load_backbone(resolve_source(args.model), name=args.model)
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.vocabulary_map, "bench", 16, 16,
                                              backbone.default_first_token)
    model = PersonalizedChameleon(backbone.model, [tokens]).eval()
    prompt = SampleBuilder(backbone, tokens, None, self_prompting=True).image_prompt_ids("A photo of <sks>.")
    prompts, greedy = [prompt] * args.images, SamplingConfig(temperature=0.0)
    n_tokens = args.images * backbone.image_seq_length

    results, outputs = {}, {}
    sample_image_tokens(model, backbone, prompts[:1], greedy)  # warm-up
    for name, use_cache in (("kv-cache", True), ("no-cache", False)):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs[name] = sample_image_tokens(model, backbone, prompts, greedy, use_cache=use_cache)
            best = min(best, time.perf_counter() - start)
        results[name] = n_tokens / best
    assert torch.equal(outputs["kv-cache"], outputs["no-cache"]), "cached and uncached sampling disagree"

    print(f"{args.model} ({backbone.family}), {args.images} image(s) x {backbone.image_seq_length} tokens, prompt {len(prompt)} tokens, "
          f"greedy, best of {args.repeats}, torch threads {torch.get_num_threads()}")
    for name, rate in results.items():
        print(f"  {name:9s} {rate:10.1f} image tokens/s")
    print(f"  speed-up of the KV cache: {results['kv-cache'] / results['no-cache']:.1f}x (identical tokens)")


if __name__ == "__main__":
    main()
