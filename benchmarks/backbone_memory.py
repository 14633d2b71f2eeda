"""Benchmark: the memory one concept's training needs, per backbone.

    python benchmarks/backbone_memory.py                      # anole-7b, janus-pro-1b, janus-pro-7b, tiny, janus-tiny
    python benchmarks/backbone_memory.py --models janus-pro-1b,tiny --k-g 16 --k-u 16 --json out.json

Two kinds of rows:
  computed  a name with a file in benchmarks/configs/ (anole-7b, janus-pro-1b, janus-pro-7b): the
            transformers class is built from that config on the meta device, so no weight is read
            or allocated, and its parameters are counted per part. The concept trains 1 + k_g + k_u
            rows of the input embedding and of the language head in fp32: their parameters,
            gradients and AdamW's two moments. Activations and logits kept for the backward pass
            are an estimate (`layer_activation_bytes`, `logit_bytes`) for one batch of the default
            size with every sample as long as an image sample.
  measured  any other name is a backbone source (`yochameleon.sources`: tiny, janus-tiny, ...):
            loaded for real and trained for a few steps in its own process (so peak memory is its
            own), with the bytes autograd keeps counted, to check the estimate's formula.
For each computed backbone, also what training a concept encoder (`python -m yochameleon.train_encoder`,
docs/encoder.md) adds: the encoder at `--encoder-width` built on the meta device (parameters, fp32 state with
AdamW), the features of one step's reference photos (concepts_per_step x max_photos photos of T x hidden fp32)
and the features kept in host memory per dataset photo. The backbone's activations are those of a step's
samples: concepts_per_step x (recognition + text QA + generation) sequences instead of one concept's batch.
Prints markdown tables; `--json` writes every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
DEFAULT_MODELS = "anole-7b,janus-pro-1b,janus-pro-7b,tiny,janus-tiny"
BATCH = 4  # trainer.batch_size
TEXT_TOKENS = 60  # prompt, soft prompt and answer around one image, as the default samples have
GPUS_GB = (12, 16, 24, 40, 80)
GPU_RESERVE = 0.10  # of a GPU's memory left to the CUDA context and allocator fragmentation
GIB, MIB = 2**30, 2**20

# Parameter-name prefixes of each part, per family; every parameter must fall in exactly one.
PARTS = {
    "chameleon": {
        "language model": ("model.embed_tokens.", "model.layers.", "model.norm."),
        "VQ model": ("model.vqmodel.",),
        "lm_head": ("lm_head.",),
    },
    "janus": {
        "language model": ("model.language_model.",),
        "vision encoder + aligner": ("model.vision_model.", "model.aligner."),
        "VQ model": ("model.vqmodel.",),
        "generation embedding/aligner/head": ("model.generation_",),
        "lm_head": ("lm_head.",),
    },
}
ALL_PARTS = ["language model", "vision encoder + aligner", "VQ model", "generation embedding/aligner/head", "lm_head"]


# ---------------------------------------------------------------- computed from a config
def config_names() -> list[str]:
    """The backbones whose figures are computed: one JSON file each in benchmarks/configs/."""
    return sorted(p.stem for p in CONFIGS.glob("*.json"))


def read_config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def build_on_meta(name: str):
    """The backbone `name` as the training code instantiates it, on the meta device (no memory).

    Chameleon is our subclass, which adds the Anole VQ decoder an Anole checkpoint ships (upstream
    has the encoder only); Janus is upstream `JanusForConditionalGeneration` with its three sub-configs.
    """
    import torch
    from transformers import (
        ChameleonConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    from yochameleon.model.backbone import YoChameleonForConditionalGeneration

    spec = read_config(name)
    kwargs = dict(spec["config"])
    with torch.device("meta"):
        if spec["family"] == "chameleon":
            return YoChameleonForConditionalGeneration(ChameleonConfig(**kwargs))
        config = JanusConfig(text_config=LlamaConfig(**kwargs.pop("text_config")),
                             vision_config=JanusVisionConfig(**kwargs.pop("vision_config")),
                             vq_config=JanusVQVAEConfig(**kwargs.pop("vq_config")), **kwargs)
        return JanusForConditionalGeneration(config)


def family_of(model) -> str:
    """`janus` or `chameleon`, from the model's class (a loaded backbone or a meta one)."""
    from transformers import JanusForConditionalGeneration

    return "janus" if isinstance(model, JanusForConditionalGeneration) else "chameleon"


def count_parts(model, family: str) -> dict[str, int]:
    """Parameters per part; a tied weight counts once. Fails on a parameter no part claims."""
    counts = dict.fromkeys(PARTS[family], 0)
    for name, param in model.named_parameters():  # remove_duplicate: tied weights once
        owners = [part for part, prefixes in PARTS[family].items() if name.startswith(prefixes)]
        if len(owners) != 1:
            raise ValueError(f"parameter {name} belongs to {owners or 'no part'} of {family}'s PARTS")
        counts[owners[0]] += param.numel()
    return counts


def text_dims(config) -> dict:
    """The language model's sizes the estimates need (Janus keeps them in `text_config`)."""
    text = config.get_text_config()
    return {"hidden": int(text.hidden_size), "intermediate": int(text.intermediate_size),
            "layers": int(text.num_hidden_layers), "vocab": int(text.vocab_size)}


def image_tokens(config, family: str) -> int:
    """Positions one image takes: Chameleon's VQ grid; Janus's 576 (SigLIP shown, VQ drawn: both 24 x 24)."""
    if family == "janus":
        return int(config.vision_config.num_image_tokens)
    vq = config.vq_config
    side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
    return side * side


def logits_width(config, family: str) -> int:
    """Logit columns per target: Chameleon's vocabulary; Janus's text head then its image-generation head."""
    vocab = text_dims(config)["vocab"]
    return vocab + int(config.vq_config.num_embeddings) if family == "janus" else vocab


def rows_state_bytes(hidden: int, n_rows: int) -> dict[str, int]:
    """The concept's trainable rows in fp32: input-embedding and language-head rows, their gradients,
    AdamW's first and second moments (the step counters are a few bytes and left out)."""
    params = 2 * n_rows * hidden * 4
    return {"params": params, "grads": params, "adamw": 2 * params, "total": 4 * params}


def layer_activation_bytes(hidden: int, intermediate: int, element_size: int, qk_norm: bool) -> int:
    """Bytes one decoder layer keeps per token for the backward pass when every weight is frozen.

    With frozen weights autograd keeps no linear layer's input (it needs the weight only), so what
    stays is: the two RMSNorms' inputs, upcast to fp32 (hidden each, 4 bytes); attention's q, k, v
    and output (4 x hidden), plus q and k before Chameleon's per-head norms (2 x hidden); the MLP's
    gate and up outputs and the activated gate (3 x intermediate). Counted on the tiny models with
    autograd's saved-tensor hooks (`saved_bytes`), which also see small per-token statistics, rotary
    tables and the attention mask on top.
    """
    return 2 * hidden * 4 + element_size * ((4 + 2 * qk_norm) * hidden + 3 * intermediate)


def logit_kept_bytes(targets: int, width: int) -> int:
    """The one fp32 (targets x width) tensor the loss keeps for backward (the log-softmax, or on Janus
    the upcast logits its two log-sum-exps read). Logits are computed at target positions only."""
    return targets * width * 4


def logit_bytes(targets: int, width: int) -> int:
    """Logits at the start of the backward pass: the kept tensor and its gradient, same size."""
    return 2 * logit_kept_bytes(targets, width)


def smallest_gpu(total_bytes: int) -> int | None:
    """The smallest common GPU (GB) that holds `total_bytes` with GPU_RESERVE of it kept free; None above 80."""
    return next((gb for gb in GPUS_GB if total_bytes <= gb * GIB * (1 - GPU_RESERVE)), None)


# One process's share of a step when trainer.concepts_per_step equals the number of processes (GPUs); the toy default
# is 4 concepts on one process. Samples per concept: conf/train_encoder.yaml's objective (4 + 2 + 1).
ENCODER_STEP = {"concepts_per_step": 1, "max_photos": 5, "samples_per_concept": 4 + 2 + 1}


def encoder_figures(config, family: str, k_g: int, k_u: int, width: int, seq: int) -> dict:
    """What training a concept encoder of `width` needs on top of the frozen backbone's weights."""
    import torch

    from yochameleon.concept.encoder import ConceptEncoder, EncoderConfig

    hidden, tokens = text_dims(config)["hidden"], image_tokens(config, family)
    n = 1 + k_g + k_u
    encoder_config = EncoderConfig(hidden_size=hidden, feature_dim=hidden, feature_tokens=tokens, k_g=k_g, k_u=k_u,
                                   token_names=tuple(f"t{i}" for i in range(n)), token_ids=tuple(range(n)),
                                   width=width, heads=max(1, width // 64))
    with torch.device("meta"):
        params = sum(p.numel() for p in ConceptEncoder(encoder_config, torch.zeros(n, hidden),
                                                        torch.zeros(n, hidden)).parameters())
    photo = tokens * hidden * 4
    step_photos = ENCODER_STEP["concepts_per_step"] * ENCODER_STEP["max_photos"]
    sequences = ENCODER_STEP["concepts_per_step"] * ENCODER_STEP["samples_per_concept"]
    dims = text_dims(config)
    activations = sequences * seq * dims["layers"] * layer_activation_bytes(
        dims["hidden"], dims["intermediate"], 2, qk_norm=family == "chameleon")
    return {"width": width, "params": params, "state_fp32_adamw": 4 * params * 4, "features_per_photo": photo,
            "features_per_step": step_photos * photo, "activations_estimate": activations,
            "logits_estimate": -(-sequences // BATCH) * logit_bytes(seq, logits_width(config, family))}


def computed_figures(name: str, k_g: int, k_u: int, encoder_width: int = 512) -> dict:
    """Every computed figure of one backbone: parameter counts per part and the memory of one concept."""
    model = build_on_meta(name)
    family, config = family_of(model), model.config
    parts = count_parts(model, family)
    params = sum(parts.values())
    dims = text_dims(config)
    n_rows = 1 + k_g + k_u
    seq = image_tokens(config, family) + TEXT_TOKENS
    rows = rows_state_bytes(dims["hidden"], n_rows)
    activations = BATCH * seq * dims["layers"] * layer_activation_bytes(
        dims["hidden"], dims["intermediate"], 2, qk_norm=family == "chameleon")
    logits = logit_bytes(seq, logits_width(config, family))  # targets: one generated image + the answers
    total = 2 * params + rows["total"] + activations + logits
    return {
        "name": name, "kind": "computed", "family": family, "checkpoint": read_config(name)["checkpoint"],
        "parts": parts, "params": params, **dims, "concept_rows": n_rows,
        "trainable_params": 2 * n_rows * dims["hidden"], "sequence": seq, "batch": BATCH,
        "logits_width": logits_width(config, family),
        "bytes": {"weights_bf16": 2 * params, "weights_fp32": 4 * params, "rows": rows,
                  "activations_estimate": activations, "logits_estimate": logits, "total": total},
        "smallest_gpu_gb": smallest_gpu(total),
        "encoder": encoder_figures(config, family, k_g, k_u, encoder_width, seq),
    }


# ---------------------------------------------------------------- measured on a tiny source
def train_step_module():
    """benchmarks/train_step.py, whose peak-memory reading and token count are reused here."""
    spec = importlib.util.spec_from_file_location("train_step", HERE / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def current_rss() -> int:
    """This process's resident memory now (Linux), to split the peak into imports, weights and training."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def default_recipe():
    """The default recipe config (its k_g, k_u, identifier and self-prompting settings)."""
    from omegaconf import OmegaConf

    from yochameleon.config import CONFIG_DIR

    return OmegaConf.load(CONFIG_DIR / "recipe" / "yochameleon.yaml")


def concept_batch(backbone, tokens) -> dict:
    """One default-size batch of the demo concept: two recognition samples, a text QA and a generation."""
    from yochameleon.config import ASSET_DIR
    from yochameleon.data.samples import SampleBuilder, SampleSpec, collate
    from yochameleon.data.vq_cache import VQCodeCache

    photos = sorted((ASSET_DIR / "demo" / "corgi" / "train").glob("*.jpg"))
    builder = SampleBuilder.from_recipe(backbone, tokens, VQCodeCache(backbone, None), default_recipe())
    specs = [SampleSpec("recognition", str(photos[0]), question="Is <sks> in this photo?", answer="Yes."),
             SampleSpec("recognition", str(photos[1]), True, "Can you see <sks> here?", "Yes, <sks> is here."),
             SampleSpec("text_qa", question="Who is <sks>?", answer="<sks> is the dog in my photos."),
             SampleSpec("generation", str(photos[2]))]
    return collate([builder.build(s) for s in specs], backbone.tokenizer.pad_token_id)


def decoder_layers(model):
    """The language model's decoder layers (Chameleon: model.model.layers; Janus: its LLaMA's)."""
    return model.get_decoder().layers


def saved_bytes(model, loss_fn) -> tuple[int, int, object]:
    """Bytes autograd keeps for backward while `loss_fn()` runs: (inside decoder layers, elsewhere, the loss).

    Frozen weights autograd refers to are not counted (they are the backbone's weights); storages
    kept twice count once.
    """
    import torch

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    where = {"layer": False}
    seen: dict[bool, dict[int, int]] = {True: {}, False: {}}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[where["layer"]][storage.data_ptr()] = storage.nbytes()
        return tensor

    hooks = []
    for layer in decoder_layers(model):
        hooks.append(layer.register_forward_pre_hook(lambda *_: where.update(layer=True)))
        hooks.append(layer.register_forward_hook(lambda *_: where.update(layer=False)))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = loss_fn()
    finally:
        for hook in hooks:
            hook.remove()
    return sum(seen[True].values()), sum(seen[False].values()), loss


def train_concept(wrapped, tokens, batch: dict, steps: int) -> dict:
    """`steps` AdamW steps on the concept's rows; what autograd keeps is counted in the first forward."""
    import torch

    optimizer = torch.optim.AdamW(tokens.parameters(), lr=1e-4)

    def loss():
        return wrapped(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["weights"])["loss"]

    in_layers, outside, first = saved_bytes(wrapped.backbone, loss)
    first.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in tokens.parameters())
    for step in range(steps):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 < steps:
            loss().backward()
    adamw = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)  # the two moments; step counters are scalars
    params = sum(p.numel() * p.element_size() for p in tokens.parameters())
    return {"saved_in_layers": in_layers, "saved_outside_layers": outside,
            "rows_bytes": {"params": params, "grads": grads, "adamw": adamw}}


def measure_source(source: str, k_g: int, k_u: int, steps: int) -> dict:
    """Load a backbone source and train one concept's rows for `steps` steps, in this process."""
    import torch

    from yochameleon.concept.tokens import PersonalizedTokens
    from yochameleon.model.backbone import resolve_dtype
    from yochameleon.model.load import load_backbone
    from yochameleon.model.personalized import IGNORE_INDEX, PersonalizedChameleon
    from yochameleon.sources import resolve_source

    bench = train_step_module()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype("auto", device)  # as model.dtype=auto trains: bfloat16 on a GPU, float32 on CPU
    rss_imports = current_rss()
    backbone = load_backbone(resolve_source(source), name=source, dtype=dtype, device=device)
    rss_loaded = current_rss()
    model, family = backbone.model, family_of(backbone.model)
    first = str(default_recipe().first_token)
    tokens = PersonalizedTokens.from_backbone(model, backbone.vocabulary_map, "bench", k_g, k_u,
                                              backbone.default_first_token if first == "auto" else first)
    tokens.to(device)
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in concept_batch(backbone, tokens).items()}
    trained = train_concept(PersonalizedChameleon(model, [tokens], bench.group_ratio("ours")), tokens, batch, steps)
    dims, parts = text_dims(backbone.config), count_parts(model, family)
    run_tokens = bench.computed_tokens(batch, "ours")
    targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    width = logits_width(backbone.config, family)
    element = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    return {
        "name": source, "kind": "measured", "family": family, "device": device.type, "dtype": dtype,
        "steps": steps, "parts": parts, "params": sum(parts.values()), **dims, **trained,
        "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in tokens.parameters()),
        "tokens_run": run_tokens, "targets": targets, "logits_width": width,
        "formula_in_layers": run_tokens * dims["layers"] * layer_activation_bytes(
            dims["hidden"], dims["intermediate"], element, qk_norm=family == "chameleon"),
        "formula_logits_kept": logit_kept_bytes(targets, width),
        "rss_after_imports": rss_imports, "rss_after_load": rss_loaded, "peak": bench.peak_bytes(device),
        "peak_kind": "CUDA allocator" if device.type == "cuda" else "process RSS",
    }


def failure_reason(stderr: str) -> str:
    """The last line a failed child wrote: its exception, which says why the source was skipped."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "the measuring process failed without a message"


def measured_in_child(source: str, k_g: int, k_u: int, steps: int) -> dict | str:
    """`measure_source` in a fresh process (its peak memory is its own); a string says why it failed."""
    out = subprocess.run([sys.executable, __file__, "--measure", source, "--k-g", str(k_g), "--k-u", str(k_u),
                          "--steps", str(steps)], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        return failure_reason(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- tables
def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def mib(n: int) -> str:
    return f"{n / MIB:.2f} MiB"


def computed_tables(rows: list[dict]) -> list[str]:
    """Markdown: memory per backbone, then parameters per part."""
    lines = [("| backbone | parameters | weights bf16 | weights fp32 | trainable params "
              "| concept rows: params + grads + AdamW | activations (estimate) | logits (estimate) "
              "| total (bf16 weights) | smallest GPU |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, rows_ = r["bytes"], r["bytes"]["rows"]
        gpu = f"{r['smallest_gpu_gb']} GB" if r["smallest_gpu_gb"] else "> 80 GB"
        lines.append(f"| {r['name']} | {r['params'] / 1e9:.3f} B | {gib(b['weights_bf16'])} | {gib(b['weights_fp32'])} "
                     f"| {r['trainable_params']:,} | {mib(rows_['total'])} ({rows_['params'] / MIB:.2f} + {rows_['grads'] / MIB:.2f} + "
                     f"{rows_['adamw'] / MIB:.2f}) | {gib(b['activations_estimate'])} | {gib(b['logits_estimate'])} "
                     f"| {gib(b['total'])} | {gpu} |")
    lines += ["", "| backbone | " + " | ".join(ALL_PARTS) + " | total |", "|---" * (len(ALL_PARTS) + 2) + "|"]
    for r in rows:
        cells = [f"{r['parts'][p] / 1e6:,.1f} M" if p in r["parts"] else "-" for p in ALL_PARTS]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['params'] / 1e6:,.1f} M |")
    return lines


def encoder_table(rows: list[dict]) -> list[str]:
    """Markdown: what training a concept encoder adds, per computed backbone."""
    lines = ["| backbone | encoder width | encoder parameters | its fp32 state + AdamW | features per photo (host) "
             "| features of a step | activations of a step (estimate) | total with bf16 weights | smallest GPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["encoder"]
        total = r["bytes"]["weights_bf16"] + e["state_fp32_adamw"] + e["features_per_step"] + e[
            "activations_estimate"] + e["logits_estimate"]
        gpu = smallest_gpu(total)
        lines.append(f"| {r['name']} | {e['width']} | {e['params'] / 1e6:.1f} M | {mib(e['state_fp32_adamw'])} "
                     f"| {mib(e['features_per_photo'])} | {mib(e['features_per_step'])} | {gib(e['activations_estimate'])} "
                     f"| {gib(total)} | {f'{gpu} GB' if gpu else '> 80 GB'} |")
    return lines


def measured_table(rows: list[dict]) -> list[str]:
    """Markdown: what the tiny sources really hold and keep."""
    lines = [("| source | device, dtype | parameters | weights | trainable params | rows: params + grads + AdamW "
              "| tokens run | kept in decoder layers: measured / formula | kept outside (logits): measured / formula "
              "| RSS after imports | after load | peak |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rb = r["rows_bytes"]
        lines.append(
            f"| {r['name']} | {r['device']}, {r['dtype']} | {r['params']:,} | {mib(r['weights_bytes'])} "
            f"| {r['trainable_params']:,} | {(rb['params'] + rb['grads'] + rb['adamw']) / 1024:.1f} KiB "
            f"({rb['params'] / 1024:.1f} + {rb['grads'] / 1024:.1f} + {rb['adamw'] / 1024:.1f}) | {r['tokens_run']} "
            f"| {mib(r['saved_in_layers'])} / {mib(r['formula_in_layers'])} "
            f"| {mib(r['saved_outside_layers'])} / {mib(r['formula_logits_kept'])} "
            f"| {mib(r['rss_after_imports'])} | {mib(r['rss_after_load'])} | {mib(r['peak'])} ({r['steps']} steps) |")
    return lines


def report(computed: list[dict], measured: list[dict], skipped: dict[str, str], k_g: int, k_u: int) -> str:
    """The whole printed report: settings, the computed tables, the measured table, what was skipped."""
    lines = []
    if computed:
        lines += [(f"Computed from benchmarks/configs/*.json on the meta device; concept rows = 1 + k_g + k_u = "
                   f"{1 + k_g + k_u}; estimates for batch {BATCH}, every sample image + {TEXT_TOKENS} tokens long, "
                   f"bf16 weights; smallest GPU keeps {GPU_RESERVE:.0%} free."), "", *computed_tables(computed), "",
                  (f"Training a concept encoder (docs/encoder.md), per process: {ENCODER_STEP['concepts_per_step']} "
                   f"concept a step (trainer.concepts_per_step = the number of processes), encoded from up to "
                   f"{ENCODER_STEP['max_photos']} photos and trained on {ENCODER_STEP['samples_per_concept']} samples "
                   "as long as an image sample."), "", *encoder_table(computed), ""]
    if measured:
        lines += [(f"Measured: a few training steps of one concept (k_g={k_g}, k_u={k_u}), batch {BATCH} "
                   "(2 recognition, 1 text QA, 1 generation), each source in its own process."), "",
                  *measured_table(measured), ""]
    lines += [f"skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    recipe = default_recipe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated: {', '.join(config_names())} (computed) or backbone sources (measured)")
    parser.add_argument("--k-g", type=int, default=int(recipe.k_g))
    parser.add_argument("--k-u", type=int, default=int(recipe.k_u))
    parser.add_argument("--steps", type=int, default=3, help="training steps per measured source")
    parser.add_argument("--encoder-width", type=int, default=512, help="concept encoder width for its figures")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_source(args.measure, args.k_g, args.k_u, args.steps)))
        return
    computed, measured, skipped = [], [], {}
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        if name in config_names():
            computed.append(computed_figures(name, args.k_g, args.k_u, args.encoder_width))
            continue
        result = measured_in_child(name, args.k_g, args.k_u, args.steps)
        if isinstance(result, str):
            skipped[name] = result
        else:
            measured.append(result)
    print(report(computed, measured, skipped, args.k_g, args.k_u), end="")
    if args.json:
        settings = {"k_g": args.k_g, "k_u": args.k_u, "batch": BATCH, "text_tokens": TEXT_TOKENS,
                    "gpu_reserve": GPU_RESERVE, "steps": args.steps}
        args.json.write_text(json.dumps({"settings": settings, "computed": computed, "measured": measured,
                                         "skipped": skipped}, indent=2) + "\n")


if __name__ == "__main__":
    main()
