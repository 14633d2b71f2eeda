"""Evaluate a trained adapter and the prompting baselines on one concept, and write a report.

    python -m evaluation.run +concept=demo adapter=outputs/corgi/yochameleon/adapter
    python -m evaluation.run +concept=demo adapter=... tasks=[recognition,text_qa] methods=[adapter,plain]

Writes `<out>/metrics.json`, `<out>/report.md`, `<out>/charts/*.png` and a W&B table
(offline into `<out>` by default). Every method is scored by the same code
(`yochameleon.metrics`, which training and the toy benchmark score with too):
recognition from the Yes/No logits (and a free answer parsed with word boundaries),
multiple choice from the option letters' logits, generation by CLIP-I / CLIP-T / DINO
against the concept's real photos when local encoder checkpoints are configured.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from evaluation import methods as M
from evaluation.questions import EvalSet, MCQuestion, YoLLaVASet
from yochameleon.config import hydra_command, plain_config, register_resolvers
from yochameleon.errors import YoChameleonError
from yochameleon.metrics import recognition as R
from yochameleon.metrics.options import accuracy, choose_options
from yochameleon.model.backbone import resolve_device
from yochameleon.schema import EvalConfig

log = logging.getLogger("evaluation.run")
register_resolvers()

FORGETTING_PROMPTS = ("Describe the image.", "What is the capital of France?", "Write one sentence about a cat.")


class EvaluationError(YoChameleonError):
    """The evaluation cannot run as configured."""


# ---- tasks -------------------------------------------------------------------------------------------
def recognition(method: M.Method, subject: str, positives: list, negatives: list, cfg) -> dict:
    """Yo'LLaVA protocol: positive, negative, weighted accuracy from logits, and from free answers."""
    builder = method.builder(subject)
    images = [M.cached_photo(str(p)) for p in positives + negatives]
    p_yes, seconds = _timed(R.yes_probabilities, method.model, builder, images, R.DEFAULT_QUESTION,
                            int(cfg.batch_size), self_prompt=method.self_prompt)
    result = R.recognition_accuracy(p_yes[:len(positives)], p_yes[len(positives):])
    result.update(n_positive=len(positives), n_negative=len(negatives), images_per_second=len(images) / seconds)
    if cfg.recognition.free_answer:
        texts, free_seconds = _timed(R.free_answers, method.model, builder, images, R.DEFAULT_QUESTION,
                                     method.self_prompt, int(cfg.recognition.max_new_tokens), int(cfg.batch_size))
        free = R.free_answer_accuracy(texts[:len(positives)], texts[len(positives):])
        free["images_per_second"] = len(images) / free_seconds
        free["examples"] = texts[:3]
        result["free_answer"] = free
        result["logit_vs_generate_speedup"] = free_seconds / seconds
    if not negatives:
        result["weighted"] = float("nan")
        result["note"] = "no negative photos: only positive accuracy is meaningful"
    return result


def _timed(fn, *args, **kwargs):
    """(result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def multiple_choice(method: M.Method, subject: str, questions: list[MCQuestion], task: str, cfg) -> dict:
    """Accuracy of the option letters' logits (after the u-tokens under self-prompting)."""
    if not questions:
        return {"accuracy": float("nan"), "n": 0}
    picks = choose_options(method.model, method.builder(subject), questions, task, method.self_prompt,
                           int(cfg.batch_size))
    return {"accuracy": accuracy(picks, questions), "n": len(questions)}


def multi_concept(method: M.Method, subject: str, questions: list[MCQuestion], cfg) -> dict:
    """Questions naming two subjects; only those whose both subjects this method can introduce."""
    usable = [q for q in questions if all(c in method.subjects for c in q.concepts)]
    correct = 0
    for question in usable:
        other = next(c for c in question.concepts if c != subject)
        text = method.rewrite(method.rewrite(question.prompt_text(), subject), other)
        picks = choose_options(method.model, method.builder(subject, (other,)), [question], "text_qa",
                               method.self_prompt, 1, text_of=lambda q, t=text: t)
        correct += picks[0] == question.answer
    return {"accuracy": correct / len(usable) if usable else float("nan"), "n": len(usable),
            "skipped_without_second_subject": len(questions) - len(usable)}


def generation(method: M.Method, subject: str, references: list, cfg, out_dir: Path, scorers: dict) -> dict:
    """Draw images for each prompt; CLIP-I / DINO against real photos, CLIP-T against the prompt."""
    from yochameleon.model.image_generation import draw

    backbone = method.backbone
    if not backbone.has_decoder:
        return {"note": "the backbone has no VQ decoder: generation not evaluated"}
    gen = cfg.generation
    sampling = backbone.sampling(gen.temperature, gen.top_k, gen.top_p, gen.guidance_scale)
    builder = method.builder(subject)
    generator = torch.Generator(device=backbone.device).manual_seed(int(cfg.seed))
    images, prompts, n = [], [], int(gen.n)
    for prompt in gen.prompts:
        cond = builder.image_prompt_ids(prompt)
        images += draw(method.model, backbone, [cond] * n, [builder.unconditional_image_prompt_ids(cond)] * n,
                       sampling, generator, int(cfg.batch_size))
        # CLIP-T compares with the prompt as a person reads it: the subject's name in place of <sks>.
        prompts += [prompt.replace("<sks>", method.subjects[subject].name)] * n
    folder = out_dir / "generated" / method.name
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        image.save(folder / f"{index:03d}.png")
    result: dict = {"n": len(images), "images": str(folder)}
    real = [M.cached_photo(str(p)) for p in references]
    if "clip" in scorers:
        result["clip_i"] = scorers["clip"].clip_i(images, real)
        result["clip_t"] = scorers["clip"].clip_t(images, prompts)
    if "dino" in scorers:
        result["dino"] = scorers["dino"].dino(images, real)
    if not scorers:
        result["note"] = "no CLIP/DINO checkpoint configured (clip.checkpoint, dino.checkpoint): images saved only"
    return result


@dataclass
class ForgettingTally:
    """The forgetting figures, added up prompt by prompt (`forgetting` says what each one means)."""

    prompts: int = 0
    positions: int = 0  # prompt positions compared with the rows loaded and no soft prompt
    worst: float = 0.0  # the largest |logit difference| outside the adapters' own ids
    rows_changed: int = 0
    rows_concept: int = 0
    answer_positions: int = 0  # positions of the plain model's answers, teacher-forced into both
    changed: int = 0
    first_changed: int = 0
    concept_wins: int = 0
    kl: float = 0.0

    def add_rows_only(self, plain: torch.Tensor, loaded: torch.Tensor, keep: torch.Tensor, plain_banned: torch.Tensor,
                      adapter_banned: torch.Tensor, own: torch.Tensor) -> None:
        """One prompt's logits, plain and with the rows loaded (no soft prompt): the invariant and its greedy tokens."""
        self.prompts += 1
        self.worst = max(self.worst, float((plain[:, keep] - loaded[:, keep]).abs().max()))
        self.positions += len(plain)
        pick = loaded.masked_fill(adapter_banned, float("-inf")).argmax(-1)
        self.rows_changed += int((plain.masked_fill(plain_banned, float("-inf")).argmax(-1) != pick).sum())
        self.rows_concept += int(torch.isin(pick, own).sum())

    def add_answer(self, p: torch.Tensor, q: torch.Tensor, own: torch.Tensor) -> None:
        """Log-probabilities at one answer's positions, the plain model's `p` and the user's `q`."""
        pick_p, pick_q = p.argmax(-1), q.argmax(-1)
        self.changed += int((pick_p != pick_q).sum())
        self.first_changed += int(pick_p[0] != pick_q[0])
        self.concept_wins += int(torch.isin(pick_q, own).sum())
        self.kl += float(torch.where(p.isfinite(), p.exp() * (p - q), torch.zeros_like(p)).sum())
        self.answer_positions += len(p)

    def figures(self) -> dict:
        n = self.answer_positions
        return {"prompts": self.prompts, "positions": self.positions, "max_abs_logit_diff": self.worst,
                "identical": self.worst == 0.0, "rows_only_greedy_changed": self.rows_changed,
                "rows_only_concept_wins": self.rows_concept, "answer_positions": n,
                "greedy_changed_share": self.changed / n, "first_token_changed": self.first_changed,
                "mean_kl": self.kl / n, "concept_token_share": self.concept_wins / n}


def _last_logits(model, backbone, ids: list[int], last: int) -> torch.Tensor:
    """The logits at the last `last` positions of one sequence, in float32."""
    from yochameleon.model.decoding import left_pad

    batch, mask = left_pad([ids], backbone.tokenizer.pad_token_id)
    batch, mask = batch.to(backbone.device), mask.to(backbone.device)
    return model.logits(model.hidden_states(batch, mask)[0])[0][-last:].float()


@torch.no_grad()
def forgetting(pm, prompt_images: list, max_new_tokens: int = 12) -> dict:
    """What loading the adapters changes on prompts that name no concept.

    Two measurements:

    - the invariant (`identical`, `max_abs_logit_diff`): with the rows loaded but no soft prompt in
      the prompt, every logit column except the adapters' own ids is bit-identical to the plain
      model's (the backbone is frozen); it cannot fail unless the backbone is touched. Over the same
      positions, under inference's banned ids, `rows_only_greedy_changed` counts where the greedy
      token differs and `rows_only_concept_wins` where a loaded identifier is it;
    - what a user notices (`greedy_changed_share`, `mean_kl`, `concept_token_share`): the question
      asked as `PersonalizedModel.answer` asks it (`answer_prompt_ids`: a concept's soft prompt and
      self-prompt group only when the question names it, so on these prompts none) against the plain
      model asked the bare question, both with inference's
      banned ids (`answer_banned_ids`: an identifier only where the question names it). Compared at the plain
      model's own greedy answer, teacher-forced into both: at each answer position, whether the
      greedy next token differs, KL(plain || adapter) in nats, and whether a concept's id wins.
    """
    from yochameleon.model.decoding import answer_banned_ids, left_pad
    from yochameleon.model.personalized import PersonalizedChameleon

    backbone, adapter_model = pm.backbone, pm.model
    device = backbone.device
    plain = PersonalizedChameleon(backbone.model, []).eval()
    bare = M.EvalBuilder(backbone, M.TextSubject("x"), None, False)
    questions = [(q, None) for q in FORGETTING_PROMPTS] + [(FORGETTING_PROMPTS[0], im) for im in prompt_images]
    own = torch.cat([c.token_ids for c in adapter_model.concepts]).to(device)
    keep = torch.ones(backbone.logits_width, dtype=torch.bool, device=device)
    keep[own] = False
    plain_banned = backbone.text_banned_ids().to(device)
    stops = backbone.text_stop_ids()
    tally = ForgettingTally()
    for question, image in questions:
        prompt = bare.prompt_ids(question, image)
        adapter_banned = answer_banned_ids(pm.prompt_builder(question), question).to(device)  # as answer bans
        # The invariant: rows loaded, no soft prompt.
        tally.add_rows_only(_last_logits(plain, backbone, prompt, len(prompt)),
                            _last_logits(adapter_model, backbone, prompt, len(prompt)),
                            keep, plain_banned, adapter_banned, own)
        # What a user notices: the plain model's greedy answer, teacher-forced into both prompts.
        ids, mask = left_pad([prompt], backbone.tokenizer.pad_token_id)
        answer = plain.generate_text(ids.to(device), mask.to(device), max_new_tokens, plain_banned, stops)[0]
        user = pm.answer_prompt_ids(question, image)  # the ids PersonalizedModel.answer continues
        n = len(answer) + 1  # the answer start and the position after each answer token
        p = _last_logits(plain, backbone, prompt + answer, n).masked_fill(plain_banned, float("-inf"))
        q = _last_logits(adapter_model, backbone, user + answer, n).masked_fill(adapter_banned, float("-inf"))
        tally.add_answer(p.log_softmax(-1), q.log_softmax(-1), own)
    return tally.figures()


# ---- orchestration -----------------------------------------------------------------------------------
def _scorers(cfg) -> dict:
    scorers = {}
    if cfg.clip.get("checkpoint"):
        from evaluation.similarity import ClipScorer

        scorers["clip"] = ClipScorer(str(cfg.clip.model), cfg.clip.checkpoint)
    if cfg.dino.get("checkpoint"):
        from evaluation.similarity import DinoScorer

        scorers["dino"] = DinoScorer(cfg.dino.checkpoint)
    return scorers


def load_eval_set(cfg) -> EvalSet | YoLLaVASet:
    """The configured evaluation set: the shipped DreamBooth set (default) or Yo'LLaVA's (`eval_set=yollava`)."""
    kind = str(cfg.eval_set.get("kind") or "dreambooth")
    if kind == "dreambooth":
        return EvalSet(Path(cfg.eval_set.dir), Path(cfg.eval_set.images))
    if kind == "yollava":
        eval_set = YoLLaVASet(Path(cfg.eval_set.root), cfg.eval_set.get("visual_qa"), cfg.eval_set.get("text_qa"))
        if not eval_set.available():
            raise EvaluationError(f"Yo'LLaVA data root {eval_set.root} has no test/<subject>/ folders; set "
                                  "eval_set.root=/path/to/yollava-data (or YOLLAVA_DATA)")
        return eval_set
    raise EvaluationError(f"unknown eval_set.kind {kind!r}: choose eval_set=dreambooth or eval_set=yollava")


@dataclass
class Splits:
    """What the tasks are asked on: recognition's positives and negatives, the QA tasks' questions."""

    positives: list
    negatives: list
    questions: dict[str, list[MCQuestion]]


def load_models(cfg):
    """(PersonalizedModel or None, backbone): the adapters (`adapter=`, `extra_adapters=`) with their backbone, else
    the configured backbone alone."""
    from yochameleon.inference import PersonalizedModel
    from yochameleon.sources import load_configured_backbone

    if cfg.adapter:
        extra = [Path(a) for a in (cfg.get("extra_adapters") or [])]
        pm = PersonalizedModel.load([Path(cfg.adapter), *extra], device=resolve_device(cfg.device),
                                    cache_dir=cfg.cache_dir, dtype=str(cfg.dtype))
        return pm, pm.backbone
    return None, load_configured_backbone(cfg.model, cfg.cache_dir, resolve_device(cfg.device), dtype=str(cfg.dtype))


def make_methods(cfg, pm, backbone, concept, subject: str, eval_set, have_set: bool, skipped: dict) -> list[M.Method]:
    """The configured methods, the evaluation set's subject names matched to the loaded concepts."""
    subject_of = {concept.name: subject, **{str(k): str(v) for k, v in (cfg.get("subjects") or {}).items()}}
    descriptions = eval_set.descriptions() if have_set else {}
    if concept.description:
        descriptions[subject] = concept.description
    names = {s: s for s in (eval_set.subjects() if have_set else [])}
    names[subject] = concept.name
    photos = {subject: concept.photos}
    methods: list[M.Method] = []
    for kind in map(str, cfg.methods):
        if kind == "adapter":
            if pm is None:
                skipped["adapter"] = "no adapter= given"
                continue
            methods.append(M.adapter_method(pm, {subject_of.get(c, c): c for c in pm.concepts}))
        elif kind == "encoder":
            if cfg.get("encoder") is None:
                skipped["encoder"] = "no encoder= given (a `python -m yochameleon.train_encoder` run's best/)"
                continue
            methods.append(M.encoder_method(backbone, cfg.encoder, concept.name, subject,
                                            concept.photos[:int(cfg.encoder_photos)]))
        else:
            methods.append(M.baseline_method(kind, backbone, names, descriptions, photos))
    return methods


def choose_splits(eval_set, have_set: bool, concept, subject: str, tasks: list[str], skipped: dict) -> Splits:
    """Recognition's photos (the evaluation set's where it holds the subject, else the concept's test split) and the
    QA questions; what cannot be asked goes into `skipped` with why and the setting that enables it."""
    in_set = have_set and subject in eval_set.subjects()
    # Yo'LLaVA protocol: the subject's test photos are the positives (the DreamBooth concepts bring their own).
    positives = eval_set.test_photos(subject) if in_set and eval_set.kind == "yollava" else list(concept.test_photos)
    negatives = eval_set.other_test_photos(subject) if in_set else []
    negatives = [p for p in negatives if p.is_file()] or list(concept.test_negatives)
    if "recognition" in tasks and not positives:
        skipped["recognition"] = (f"concept <{concept.name}> has no test_photos: recognition skipped (set "
                                  "concept.test_photos to held-out photos of the subject)")
        log.warning(skipped["recognition"])
    if "recognition" in tasks and positives and not negatives:
        log.warning("no negative photos for recognition: only positive accuracy is reported")
    questions: dict[str, list[MCQuestion]] = {}
    if in_set:
        visual = eval_set.visual_qa(subject)
        questions = {"vqa": visual.questions, "text_qa": eval_set.text_qa(subject),
                     "multi_concept": eval_set.multi_concept(subject)}
        if visual.missing_images:
            missing = visual.missing_images
            skipped["vqa_missing_images"] = (f"{len(missing)} image(s) not found, their questions skipped (first: "
                                             f"{', '.join(missing[:3])}); check eval_set.root / eval_set.images")
    elif have_set:
        skipped["qa"] = f"subject {subject!r} is not in the evaluation set {eval_set.where()}: QA tasks skipped"
    if in_set and eval_set.kind == "yollava":
        for task, file, name in (("vqa", eval_set.visual_file, "yollava-visual-qa.json"),
                                 ("text_qa", eval_set.text_file, "text_qa.json")):
            if task in tasks and file is None:
                skipped[task] = (f"no {name} in {eval_set.root} or beside it: {task} skipped (set "
                                 f"eval_set.{'visual_qa' if task == 'vqa' else 'text_qa'}=<file>)")
    return Splits(positives, negatives, questions)


def run_tasks(cfg, method: M.Method, subject: str, splits: Splits, references: list, tasks: list[str],
              scorers: dict, out_dir: Path) -> dict:
    """One method's row: the tokens it spends on the subject, then each configured task it can be asked."""
    row: dict = {"tokens": method.tokens(subject)}
    if "recognition" in tasks and splits.positives:
        row["recognition"] = recognition(method, subject, splits.positives, splits.negatives, cfg)
    for task in ("vqa", "text_qa"):
        if task in tasks and splits.questions.get(task):
            row[task] = multiple_choice(method, subject, splits.questions[task], task, cfg)
    if "multi_concept" in tasks and splits.questions.get("multi_concept"):
        row["multi_concept"] = multi_concept(method, subject, splits.questions["multi_concept"], cfg)
    if "generation" in tasks:
        row["generation"] = generation(method, subject, references, cfg, out_dir, scorers)
    return row


def _eval_set_record(eval_set, splits: Splits) -> dict:
    """What loaded of a Yo'LLaVA set, so a run can be checked against the published set's size; else its kind."""
    if eval_set.kind != "yollava":
        return {"kind": eval_set.kind}
    return {**eval_set.summary(), "subject_test_photos": len(splits.positives),
            "subject_negatives": len(splits.negatives), "subject_visual_qa": len(splits.questions.get("vqa", [])),
            "subject_text_qa": len(splits.questions.get("text_qa", []))}


def _throughput(results: dict) -> dict | None:
    """Logit scoring against free answers, in images per second, for the first method that measured both."""
    first = next(iter(results["methods"].values()), {})
    if "recognition" not in first or "logit_vs_generate_speedup" not in first["recognition"]:
        return None
    rec = first["recognition"]
    return {"method": next(iter(results["methods"])), "logit_images_per_second": rec["images_per_second"],
            "generate_images_per_second": rec["free_answer"]["images_per_second"],
            "logit_vs_generate_speedup": rec["logit_vs_generate_speedup"]}


def _unrunnable(eval_set, have_set: bool, tasks: list[str]) -> dict[str, str]:
    """The QA tasks' skip when the evaluation set is not on this machine."""
    if have_set or not {"vqa", "text_qa", "multi_concept"} & set(tasks):
        return {}
    fix = ("eval_set.images=<the DreamBooth dataset folder>" if eval_set.kind == "dreambooth" else
           "eval_set.root=<the yollava-data folder>")
    return {"qa": (f"evaluation set {eval_set.where()} not found: vqa, text_qa and multi_concept skipped, "
                   f"recognition uses the concept's own test negatives; set {fix}")}


def evaluate(cfg, out_dir: Path) -> dict:
    """Run every configured task for every configured method; returns the metrics dict.

    Load (the concept, the evaluation set, the adapters or the backbone, the methods), choose the splits, then
    run the tasks method by method, and the forgetting check on the adapters."""
    from tqdm.auto import tqdm

    from yochameleon.data.concept import ConceptData

    torch.manual_seed(int(cfg.seed))
    concept = ConceptData.from_config(cfg.concept)
    subject = str(cfg.concept.get("eval_subject") or concept.name)
    eval_set = load_eval_set(cfg)
    have_set = eval_set.available()
    tasks = [str(t) for t in cfg.tasks]
    skipped = _unrunnable(eval_set, have_set, tasks)
    pm, backbone = load_models(cfg)
    methods = make_methods(cfg, pm, backbone, concept, subject, eval_set, have_set, skipped)
    splits = choose_splits(eval_set, have_set, concept, subject, tasks, skipped)
    scorers = _scorers(cfg) if "generation" in tasks else {}
    if "generation" in tasks and not scorers:
        skipped["generation_similarity"] = (
            "no CLIP/DINO checkpoint configured: images drawn and saved, CLIP-I / CLIP-T / DINO not computed; set "
            "clip.checkpoint=<local open_clip weights> and/or dino.checkpoint=<local HF dir, e.g. facebook/dinov2-small>")
    if "forgetting" in tasks and pm is None:
        skipped["forgetting"] = "no adapter= given: forgetting compares an adapter with the plain backbone"
    results: dict = {"concept": concept.name, "subject": subject, "methods": {}, "skipped": skipped,
                     "eval_set": _eval_set_record(eval_set, splits)}
    for method in tqdm(methods, desc="methods"):
        if subject not in method.subjects:
            skipped[method.name] = f"no way to introduce {subject!r} (e.g. no description)"
            continue
        results["methods"][method.name] = run_tasks(cfg, method, subject, splits, concept.photos + concept.test_photos,
                                                    tasks, scorers, out_dir)
    if "forgetting" in tasks and pm is not None:
        results["forgetting"] = forgetting(pm, [M.cached_photo(str(p)) for p in splits.negatives[:2]])
    if (throughput := _throughput(results)) is not None:
        results["throughput"] = throughput
    return results


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@hydra_command("eval", EvalConfig)
def main(cfg: DictConfig) -> dict | None:
    """Hydra entry point."""
    from evaluation.report import write_report

    if cfg.get("concept") is None:
        print("error: no concept given. Run `python -m evaluation.run +concept=<name> adapter=<dir>`.", file=sys.stderr)
        sys.exit(2)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = evaluate(cfg, out_dir)
    except YoChameleonError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    results = _clean(results)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(plain_config(cfg)))
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    report = write_report(results, out_dir, cfg.logger)
    shown = "\n".join(line for line in report.splitlines() if not line.startswith(("![", "Skipped ")))
    print(re.sub(r"\n{3,}", "\n\n", shown).rstrip())
    print(where_results_went(results, out_dir))
    return results


def where_results_went(results: dict, out_dir: Path) -> str:
    """The closing lines: where the report and the metrics are, and each skipped task with why and its setting."""
    lines = ["", f"done: evaluation of <{results['concept']}>",
             f"  report        {out_dir / 'report.md'}",
             f"  metrics       {out_dir / 'metrics.json'}"]
    if (out_dir / "charts" / "methods.png").is_file():
        lines.append(f"  chart         {out_dir / 'charts' / 'methods.png'}")
    lines += [f"  skipped       {name}: {reason}" for name, reason in (results.get("skipped") or {}).items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
