"""Draw your concept: `python -m yochameleon.generate --adapter <dir> --prompt "A photo of <bo> on the beach."`.

    python -m yochameleon.generate --adapter outputs/corgi/yochameleon/adapter \\
        --prompt "A photo of <corgi> on the beach." -n 4 --guidance 3.0 --seed 0 --out samples/
    # several concepts in one prompt:
    python -m yochameleon.generate --adapter runs/bo/adapter --adapter runs/mam/adapter --prompt "<bo> and <mam> playing."
    # a concept from photos, no training (a concept encoder, `python -m yochameleon.train_encoder`):
    python -m yochameleon.generate --encoder outputs/encoders/encoder/best --concept bo=photos/bo/ --prompt "A photo of <bo>."
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from yochameleon.errors import YoChameleonError


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m yochameleon.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", default=[], help="concept adapter dir (repeatable)")
    parser.add_argument("--encoder", default=None, help="concept encoder dir, for --concept name=<photos>")
    parser.add_argument("--concept", action="append", default=[],
                        help="with --encoder: name=<photo, folder or a,b,c> adds a concept from photos (repeatable)")
    parser.add_argument("--prompt", required=True, help='e.g. "A photo of <bo> on the beach."')
    parser.add_argument("-n", "--num-images", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (1 = off; default: the backbone's, Chameleon 1, Janus 5, "
                             "the toy world its recorded one)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 = greedy (default: the backbone's, 1 unless its checkpoint records another)")
    parser.add_argument("--top-k", type=int, default=None, help="0 = off (default: the backbone's, off)")
    parser.add_argument("--top-p", type=float, default=None, help="1 = off (default: the backbone's, off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4, help="images sampled together")
    parser.add_argument("--out", default="samples", help="output directory for the PNG files")
    parser.add_argument("--model-path", default=None, help="local backbone directory (default: the adapter's record)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu) | cpu | cuda[:N]")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="backbone weights: auto = bfloat16 on a GPU, float32 on CPU (a 7B model: ~14 vs ~28 GB)")
    args = parser.parse_args(argv)
    if not args.adapter and not args.encoder:
        parser.error("give --adapter <dir> (a trained concept) and/or --encoder <dir> with --concept name=<photos>")
    if args.num_images <= 0:
        parser.error(f"-n must be positive, got {args.num_images}")
    if args.guidance is not None and args.guidance < 0:
        parser.error(f"--guidance must be >= 0 (1 = off), got {args.guidance}")
    if args.batch_size <= 0:
        parser.error("--batch-size must be positive")
    return args


def check_writable(directory: Path) -> None:
    """Fail before sampling when the output directory cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise YoChameleonError(f"cannot write to output directory {directory} ({err.strerror}); "
                               "choose another with --out") from err


def slug(prompt: str) -> str:
    """A short file-name-safe version of a prompt."""
    return re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:60] or "image"


def main(argv=None) -> int:
    """Entry point."""
    args = parse_args(argv)
    from yochameleon.inference import check_before_loading, encoded_concepts, load_for_command

    out = Path(args.out)
    try:
        check_writable(out)
        added, picked = encoded_concepts(args.concept)
        if picked:
            raise YoChameleonError(f"--concept {picked!r}: generate takes name=<photos> (the prompt names the concept)")
        check_before_loading(args.adapter, [args.prompt], encoded=added)  # a typo costs no model load
        pm = load_for_command(args.adapter, args.encoder, added, args.model_path, args.device, args.dtype)
        images = pm.generate_images(args.prompt, n=args.num_images, guidance_scale=args.guidance,
                                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                    seed=args.seed, batch_size=args.batch_size, progress=True)
    except YoChameleonError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for index, image in enumerate(images):
        path = out / f"{slug(args.prompt)}_seed{args.seed}_{index:02d}.png"
        image.save(path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
