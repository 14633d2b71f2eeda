"""The pretrained toy backbone as a few-MB file in the repository, and back.

    python -m yochameleon.toyworld.ship      (= make toyworld-pack, after make toyworld)

A build is 65536 x 128 embedding and output matrices of which only the rows the world uses
are trained: the pack keeps those rows, the transformer, the VQ model and the judge in
float16 (`yochameleon/assets/toyworld/toyworld.safetensors`), plus the spec and build
report. Unpacking rebuilds the tokenizer from its corpus, initialises the untrained rows
from the seed exactly as the build did (output rows stay zero) and writes a normal HF
checkpoint into the cache; CI and a fresh clone get the backbone in seconds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from yochameleon.tiny import chameleon as tiny
from yochameleon.model.backbone import YoChameleonForConditionalGeneration
from yochameleon.toyworld.pretrain import trained_token_ids
from yochameleon.toyworld.spec import JUDGE_FILE, toy_tokenizer, toyworld_dir

log = logging.getLogger(__name__)

PACK = Path(__file__).resolve().parents[1] / "assets" / "toyworld" / "toyworld.safetensors"
EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


def pack(build_dir: str | Path, target: Path = PACK) -> Path:
    """Write the pack of a finished build."""
    from safetensors.torch import load_file, save_file

    build_dir = Path(build_dir)
    meta = json.loads((build_dir / "yochameleon_tiny.json").read_text())
    config = json.loads((build_dir / "config.json").read_text())
    weights = {}
    for file in sorted(build_dir.glob("model*.safetensors")):
        weights.update(load_file(str(file)))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(build_dir))
    rows = trained_token_ids(tokenizer, config["vocabulary_map"], meta["spec"]["vq_num_codes"], 4)
    tensors = {"trained_ids": rows}
    for name, value in weights.items():
        if name in (EMBED, HEAD):
            tensors[name + ".rows"] = value[rows].half()
        else:
            tensors[name] = value.half() if value.is_floating_point() else value
    for name, value in load_file(str(build_dir / JUDGE_FILE)).items():
        tensors["judge." + name] = value.half()
    report = {}
    for extra in ("toyworld_build.json", "toyworld_knowledge.json"):
        if (build_dir / extra).is_file():
            report.update(json.loads((build_dir / extra).read_text()))
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target),
              metadata={"spec": json.dumps(meta["spec"]), "key": meta["key"], "report": json.dumps(report)})
    return target


def packed_key(target: Path = PACK) -> str | None:
    """The build key of the shipped pack (None when there is none)."""
    if not target.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(target), framework="pt") as handle:
        return handle.metadata()["key"]


def unpack(out_dir: str | Path, target: Path = PACK) -> Path:
    """Rebuild the full HF checkpoint from the pack into `out_dir`."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(target), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    spec, key = json.loads(meta["spec"]), meta["key"]
    tokenizer, vocab = toy_tokenizer(spec)
    config = tiny.build_config(spec, vocab)
    torch.manual_seed(spec["seed"])  # the untrained rows as the build initialised them
    model = YoChameleonForConditionalGeneration(config)
    rows = tensors.pop("trained_ids")
    judge = {k[len("judge."):]: tensors.pop(k).float() for k in list(tensors) if k.startswith("judge.")}
    state = model.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            if name.endswith(".rows"):
                continue
            state[name].copy_(value.to(state[name].dtype))
        state[EMBED][rows] = tensors[EMBED + ".rows"].float()
        state[HEAD].zero_()
        state[HEAD][rows] = tensors[HEAD + ".rows"].float()
    report = json.loads(meta["report"])
    return tiny.write_checkpoint(model, tokenizer, spec, key, out_dir, extra_files={
        "toyworld_build.json": json.dumps({**report, "unpacked_from": PACK.name}, indent=2),
        JUDGE_FILE: save({k: v.contiguous() for k, v in judge.items()}),
    })


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_dir = toyworld_dir()
    if not (build_dir / "config.json").is_file():  # building is build.py's job: this module sits below it
        raise SystemExit(f"error: no toy-world build at {build_dir}; run `make toyworld` (or "
                         "`python -m yochameleon.toyworld.build`) first, then pack it")
    target = pack(build_dir)
    print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
