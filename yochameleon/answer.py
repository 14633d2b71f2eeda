"""Ask a personalized model about your concept from the shell.

    python -m yochameleon.answer --adapter outputs/corgi/yochameleon/adapter --image photo.jpg
        -> Is <corgi> in this photo?  Yes  (P(Yes) = 0.91)
    python -m yochameleon.answer --adapter outputs/corgi/yochameleon/adapter --question "Describe <corgi>."
    python -m yochameleon.answer --adapter A --adapter B --image x.jpg --question "What is <a> doing here?"
    # a concept from photos, no training (a concept encoder, `python -m yochameleon.train_encoder`):
    python -m yochameleon.answer --encoder outputs/encoders/encoder/best --concept bo=photos/bo/ --image x.jpg
"""

from __future__ import annotations

import argparse
import json
import sys

from yochameleon.errors import YoChameleonError


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m yochameleon.answer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", default=[],
                        help="concept adapter directory (repeat to load several concepts)")
    parser.add_argument("--encoder", default=None,
                        help="concept encoder directory: --concept name=<photo, folder or a,b,c> adds a concept "
                             "from 1-5 photos with no training")
    parser.add_argument("--image", action="append", default=[], help="photo(s) to ask about")
    parser.add_argument("--question", default=None,
                        help="free-form question; without it, each --image gets 'Is <concept> in this photo?'")
    parser.add_argument("--concept", action="append", default=[],
                        help="which loaded concept to recognize (default: the first); with --encoder, "
                             "name=<photos> adds one (repeatable)")
    parser.add_argument("--model-path", default=None, help="local backbone directory (default: the adapter's record)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu) | cpu | cuda[:N]")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="backbone weights: auto = bfloat16 on a GPU, float32 on CPU (a 7B model: ~14 vs ~28 GB)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args(argv)
    if not args.adapter and not args.encoder:
        parser.error("give --adapter <dir> (a trained concept) and/or --encoder <dir> with --concept name=<photos>")
    if args.question is None and not args.image:
        parser.error("give --image (recognition) and/or --question (free-form answer)")
    if args.max_new_tokens <= 0:
        parser.error("--max-new-tokens must be positive")
    return args


def main(argv=None) -> int:
    """Entry point."""
    args = parse_args(argv)
    from yochameleon.inference import check_before_loading, encoded_concepts, load_for_command

    try:
        added, args.concept = encoded_concepts(args.concept)
        check_before_loading(args.adapter, [args.question], args.concept, added)  # a typo costs no model load
        pm = load_for_command(args.adapter, args.encoder, added, args.model_path, args.device, args.dtype)
        results = []
        if args.question is None:
            for image in args.image:
                verdict = pm.recognize(image, concept=args.concept)
                results.append({"image": image, "question": f"Is <{verdict.concept}> in this photo?",
                                "answer": verdict.answer, "p_yes": round(verdict.probability, 4)})
        else:
            for image in args.image or [None]:
                text = pm.answer(args.question, image=image, max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, seed=args.seed, concept=args.concept)
                results.append({"image": image, "question": args.question, "answer": text})
    except YoChameleonError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            where = f"[{result['image']}] " if result["image"] else ""
            extra = f"  (P(Yes) = {result['p_yes']:.3f})" if "p_yes" in result else ""
            print(f"{where}{result['question']}  {result['answer']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
