"""Training a concept encoder across many concepts: `python -m yochameleon.train_encoder`.

    setup()        the backbone (frozen), the concept folders and their splits, every photo's features and the
                   backbone's own answers about the training concepts' photos (text QA), the encoder, the
                   optimizer and its schedule; a resume restores them exactly
    train_step(s)  `trainer.concepts_per_step` training concepts: each is encoded from 1..max_photos of its
                   photos and must then recognize *other* photos of itself (Yes) and of other concepts (No;
                   the answer token weighted `objective.yes_no_weight`), answer the backbone's questions about
                   itself with no photo, and draw another photo of itself (image-token reconstruction)
    evaluate(s)    the validation concepts, zero-shot from `trainer.eval_refs` photos: mean AUROC chooses best/
    finish()       the last encoder, best/'s test-concept scores (once) with 1 and with max_photos photos

What a step sees is fixed by (seed, step), so a resumed run takes the same steps as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from omegaconf import DictConfig
from tqdm.auto import tqdm

from yochameleon.concept.encoder import (ENCODER_WEIGHTS, PhotoFeatures, VisionFeatures, encoder_config_for,
                                         load_encoder,
                                         new_encoder, rows_as_tokens, save_encoder)
from yochameleon.config import plain_config
from yochameleon.data import templates
from yochameleon.data.concept_folders import read_concept_folders
from yochameleon.data.preparation import generate_conversations, generated_qa_facts
from yochameleon.data.samples import SampleBuilder, SampleSpec, collate
from yochameleon.data.vq_cache import VQCodeCache, file_digest
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir, write_json
from yochameleon.metrics.zero_shot import zero_shot_scores
from yochameleon.model.personalized import IGNORE_INDEX, PersonalizedChameleon
from yochameleon.sources import load_configured_backbone, source_record
from yochameleon.training.logging import NullLogger, RunLogger
from yochameleon.training.optimization import build_lr_scheduler, build_optimizer, schedule_fact

log = logging.getLogger(__name__)
SELECT_BY = "auroc"  # the validation concepts' mean recognition AUROC chooses best/


class EncoderRunError(YoChameleonError):
    """The run directory or its checkpoint does not fit this command."""


@dataclass
class ConceptStep:
    """What one concept contributes to a step: the photos it is encoded from and its samples."""

    name: str
    refs: list[str]
    specs: list[SampleSpec] = field(default_factory=list)


def plan_step(folders, qa: dict, step: int, seed: int, cfg) -> list[ConceptStep]:
    """The concepts of global step `step` and their samples (deterministic in seed and step)."""
    rng = random.Random(f"{seed}:{step}")
    o, max_photos = cfg.objective, int(cfg.encoder.max_photos)
    chosen = rng.sample(range(len(folders)), min(int(cfg.trainer.concepts_per_step), len(folders)))
    steps = []
    for index in chosen:
        folder = folders[index]
        photos = [str(p) for p in folder.photos]
        rng.shuffle(photos)
        n_refs = rng.randint(1, min(max_photos, len(photos) - 1))
        refs, others = photos[:n_refs], photos[n_refs:]
        plan = ConceptStep(folder.name, refs)
        for _ in range(int(o.recognition)):
            if rng.random() < float(o.positive_fraction):
                plan.specs.append(SampleSpec("recognition", rng.choice(others), rng.random() < 0.5,
                                             rng.choice(templates.RECOGNITION_QUESTIONS),
                                             rng.choice(templates.POSITIVE_ANSWERS), True))
            else:
                other = folders[rng.choice([i for i in range(len(folders)) if i != index])]
                plan.specs.append(SampleSpec("recognition", str(rng.choice(other.photos)), rng.random() < 0.5,
                                             rng.choice(templates.RECOGNITION_QUESTIONS),
                                             rng.choice(templates.NEGATIVE_ANSWERS), False))
        turns = qa.get(folder.name, [])
        for _ in range(int(o.text_qa) if turns else 0):
            turn = rng.choice(turns)
            plan.specs.append(SampleSpec("text_qa", None, False, turn["question"], turn["answer"]))
        for _ in range(int(o.generation)):
            plan.specs.append(SampleSpec("generation", rng.choice(others), False, templates.GENERATION_PROMPTS[0]))
        steps.append(plan)
    return steps


def weighted_sample(builder: SampleBuilder, spec: SampleSpec, yes_no_weight: float) -> dict:
    """`builder.build(spec)`, with a recognition answer's first word (Yes / No) weighted `yes_no_weight`
    (PLVM weights it 20x: the answer that decides recognition is one token among ten)."""
    sample = builder.build(spec)
    if spec.task == "recognition":
        labels = sample["labels"]
        first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        first += len(builder.answer_prefix("recognition"))
        sample["weights"][first] = float(yes_no_weight)
    return sample


def concept_qa(backbone, folders, cache_dir, data_cfg, progress: bool) -> dict:
    """name -> text QA turns: a folder's own qa.json where it has one, else the frozen backbone's answers to
    attribute questions about the first `data.qa_photos` photos of the concept (the Yo'LLaVA way), cached on
    disk. The questions are `templates.ATTRIBUTE_QUESTIONS[data.category]` about "the <data.class_noun>"."""
    own = bool(getattr(data_cfg, "folder_qa", True))  # data.folder_qa
    given = {f.name: f.qa for f in folders if own and f.qa is not None}
    asked_about = [f for f in folders if f.name not in given]
    return given | (_asked_qa(backbone, asked_about, cache_dir, data_cfg, progress) if asked_about else {})


def _asked_qa(backbone, folders, cache_dir, data_cfg, progress: bool) -> dict:
    """The backbone's answers about each folder's first photos (`concept_qa`), cached on disk."""
    asked = SimpleNamespace(class_noun=str(data_cfg.class_noun), category=str(data_cfg.category))
    questions_per_photo_from = int(data_cfg.qa_photos)
    # Keyed as the preparation's generated QA is: the backbone, the photos' content, the questions as asked.
    agree = bool(getattr(data_cfg, "qa_agree", True))  # data.qa_agree
    blob = json.dumps({"backbone": backbone.fingerprint(), "qa": generated_qa_facts(asked) | {"agree": agree},
                       "photos": {f.name: [file_digest(p) for p in f.photos[:questions_per_photo_from]]
                                  for f in folders}}, sort_keys=True)
    path = Path(cache_dir) / "encoder_qa" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
    if path.exists():
        return json.loads(path.read_text())
    from yochameleon.data.images import load_image

    out = {}
    for folder in tqdm(folders, desc="ask the backbone about each training concept", disable=not progress):
        photos = folder.photos[:questions_per_photo_from]
        out[folder.name] = [{"question": t["question"], "answer": t["answer"]} for t in generate_conversations(
            backbone, photos, [load_image(p) for p in photos], asked, progress=False, agree=agree)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, out)
    return out


def _check_run_dir(run_dir: Path, resume: bool, steps: int) -> dict | None:
    """The checkpoint's state when this run continues one; refuses to overwrite a run or to redo a finished one."""
    state_path = run_dir / "checkpoint" / "state.json"
    if not state_path.exists():
        if resume:
            log.warning("trainer.resume=true but %s has no checkpoint: starting from step 0", run_dir)
        return None
    state = json.loads(state_path.read_text())
    if not resume:
        raise EncoderRunError(f"{run_dir} already holds an encoder run (step {state['step']} of {state['steps']}). "
                              "Continue it with trainer.resume=true, or start another with run_name=<new name>. "
                              "Nothing was changed.")
    if (run_dir / "summary.json").exists() and state["step"] >= steps:
        raise EncoderRunError(f"{run_dir} is finished (step {state['step']}); nothing was changed. To train further, "
                              f"raise trainer.steps above {state['step']}.")
    return state


class EncoderTrainer:
    """One encoder training run; `train_encoder(cfg, run_dir)` runs setup / steps / finish in order."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir, self.tcfg = cfg, Path(run_dir), cfg.trainer

    def setup(self) -> None:
        cfg, tcfg = self.cfg, self.tcfg
        self.accelerator = Accelerator(cpu=str(tcfg.device) == "cpu")
        self.state = _check_run_dir(self.run_dir, bool(tcfg.resume), int(tcfg.steps))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.main = self.accelerator.is_main_process
        world = self.accelerator.num_processes
        if int(tcfg.concepts_per_step) % world:
            raise EncoderRunError(f"trainer.concepts_per_step={tcfg.concepts_per_step} does not split over {world} "
                                  f"processes: use a multiple of {world}, so every process encodes as many concepts")
        self.progress = bool(tcfg.progress) and self.main
        with self.accelerator.main_process_first():
            self.backbone = load_configured_backbone(cfg.model, cfg.cache_dir, device=self.accelerator.device)
        # What the encoder (and every adapter it makes) records: as an adapter's, so the backbone can be found again.
        self.fingerprint = source_record(self.backbone, cfg.model)
        self.splits = read_concept_folders(cfg.data.root, cfg.data.val_concepts, cfg.data.test_concepts)
        self.cache = VQCodeCache(self.backbone, Path(cfg.cache_dir) / "vq")
        self.features = self._setup_features()
        with self.accelerator.main_process_first():
            everything = [p for folders in self.splits.values() for f in folders for p in f.photos]
            with tqdm(total=len(everything), desc="VQ-encode photos (cached)", disable=not self.progress) as bar:
                self.cache.warm(everything, bar)
            self.qa = (concept_qa(self.backbone, self.splits["train"], cfg.cache_dir, cfg.data, self.progress)
                       if int(cfg.objective.text_qa) else {})
        self.encoder, self.optimizer, self.scheduler = self._setup_encoder()
        self.logger = (RunLogger(cfg.logger, self.run_dir, plain_config(cfg), (self.state or {}).get("wandb_id"),
                                 (self.state or {}).get("step")) if self.main else NullLogger())
        self.best = dict((self.state or {}).get("best", {"score": -math.inf, "step": None}))

    def _setup_features(self):
        """The photos' features: the backbone's own, or a local vision checkpoint's (encoder.feature_source)."""
        e, memory = self.cfg.encoder, float(self.tcfg.feature_memory_gib)
        if str(e.feature_source) == "backbone":
            return PhotoFeatures(self.backbone, self.cache, memory_gib=memory, layer=e.feature_layer)
        if e.feature_layer is not None:
            raise EncoderRunError(f"encoder.feature_layer={e.feature_layer} picks one of the backbone's layers; with "
                                  "encoder.feature_source=vision the vision checkpoint's last states are read: "
                                  "leave encoder.feature_layer=null")
        if e.feature_model is None:
            raise EncoderRunError("encoder.feature_source=vision needs encoder.feature_model=<the folder of a local "
                                  "DINOv2 / CLIP / SigLIP checkpoint> (nothing is downloaded)")
        return VisionFeatures(e.feature_model, self.accelerator.device, memory_gib=memory)

    def _setup_encoder(self):
        """The encoder (new, or the checkpoint's), the optimizer and its schedule, prepared by accelerate."""
        cfg, e = self.cfg, self.cfg.encoder
        first = str(e.first_token)
        config = encoder_config_for(
            self.backbone, int(e.k_g), int(e.k_u), self.backbone.default_first_token if first == "auto" else first,
            features=self.features, width=int(e.width), layers=int(e.layers), heads=int(e.heads),
            max_photos=int(e.max_photos), recipe=plain_config(cfg.recipe))
        torch.manual_seed(int(cfg.seed))
        encoder = new_encoder(self.backbone, config).to(self.accelerator.device)
        checkpoint = self.run_dir / "checkpoint"
        if self.state is not None:
            if self.state["facts"] != self.run_facts(config):
                raise EncoderRunError(f"{checkpoint} was written with other settings ({self.state['facts']}); "
                                      "resume with the same encoder, recipe, data, seed and schedule, or start a "
                                      "new run_name")
            encoder.load_state_dict(load_encoder(checkpoint / "encoder", self.backbone).state_dict())
        optimizer = build_optimizer(encoder.parameters(), self.tcfg)
        scheduler = build_lr_scheduler(optimizer, self.tcfg, int(self.tcfg.steps))
        if self.state is not None:
            optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
            scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        encoder, optimizer = self.accelerator.prepare(encoder, optimizer)
        return encoder, optimizer, scheduler

    def run_facts(self, config) -> dict:
        """Settings a checkpoint must share with the run that resumes it."""
        cfg = self.cfg
        return {"encoder": config.to_json() | {"recipe": None}, "recipe": plain_config(cfg.recipe),
                "objective": plain_config(cfg.objective), "seed": int(cfg.seed), "data": str(cfg.data.root),
                "schedule": schedule_fact(self.tcfg), "concepts_per_step": int(self.tcfg.concepts_per_step),
                "world": self.accelerator.num_processes}

    @property
    def unwrapped(self):
        """The encoder inside accelerate's wrapper (DDP's `.module`; DeepSpeed's own unwrapping only there, as
        asking accelerate imports DeepSpeed on every run)."""
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            return self.accelerator.unwrap_model(self.encoder)
        return getattr(self.encoder, "module", self.encoder)

    def builder(self, tokens) -> SampleBuilder:
        r = self.cfg.recipe
        return SampleBuilder(self.backbone, tokens, self.cache, bool(r.self_prompting),
                             group_loss=str(r.self_prompt_loss), generation_group=str(r.generation_group),
                             generation_weight=float(self.cfg.objective.generation_weight))

    def encode(self, encoder, ref_lists: list[list[str]]):
        """Rows for each list of reference photos: (input_rows, output_rows), each (B, n, hidden)."""
        feats = [self.features(refs) for refs in ref_lists]
        most = max(len(f) for f in feats)
        batch = torch.zeros(len(feats), most, *feats[0].shape[1:])
        mask = torch.zeros(len(feats), most, dtype=torch.bool)
        for i, f in enumerate(feats):
            batch[i, :len(f)], mask[i, :len(f)] = f, True
        device = self.accelerator.device
        return encoder(batch.to(device), mask.to(device))

    def train_step(self, step: int) -> dict:
        """One optimizer step over this process's share of the step's concepts."""
        plans = plan_step(self.splits["train"], self.qa, step, int(self.cfg.seed), self.cfg)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = plans[rank::world]
        inputs, outputs = self.encode(self.encoder, [p.refs for p in mine])
        device, pad = self.accelerator.device, self.backbone.tokenizer.pad_token_id
        tasks, total = {}, 0.0
        for i, plan in enumerate(mine):
            tokens = rows_as_tokens(self.unwrapped.config, plan.name, inputs[i], outputs[i])
            builder = self.builder(tokens)
            batch = collate([weighted_sample(builder, s, float(self.cfg.objective.yes_no_weight))
                             for s in plan.specs], pad)
            model = PersonalizedChameleon(self.backbone.model, [tokens], float(self.tcfg.length_group_ratio))
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                        batch["labels"].to(device), batch["weights"].to(device))
            weights = batch["sample_weights"].to(device)
            total = total + (out["per_sample"] * weights).sum() / weights.sum() / len(mine)
            for task, value in zip(batch["tasks"], out["per_sample"].detach().tolist()):
                tasks.setdefault(task, []).append(value)
        lr = self.scheduler.get_last_lr()[0]
        self.accelerator.backward(total)
        if self.tcfg.grad_clip:
            self.accelerator.clip_grad_norm_(self.encoder.parameters(), float(self.tcfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        # The step's loss over every process's concepts (each process's is the mean over its own share).
        loss = float(self.accelerator.reduce(total.detach(), reduction="mean"))
        return {"train/loss": loss, "train/lr": lr} | {f"train/loss/{t}": sum(v) / len(v) for t, v in tasks.items()}

    @torch.no_grad()
    def scores(self, encoder, folders, n_refs: int) -> dict:
        """`zero_shot_scores` of held-out concept folders, each encoded by `encoder` from `n_refs` photos."""
        encoder.eval()
        config = encoder.config

        def introduce(folder, refs):
            inputs, outputs = self.encode(encoder, [refs])
            tokens = rows_as_tokens(config, folder.name, inputs[0], outputs[0])
            return PersonalizedChameleon(self.backbone.model, [tokens]).eval(), self.builder(tokens)

        try:
            return zero_shot_scores(introduce, folders, n_refs, int(config.max_photos),
                                    int(self.tcfg.eval_batch_size))
        finally:
            encoder.train()

    def evaluate(self, done: int) -> dict:
        """The validation concepts (main process): mean AUROC; best/ when it improves (written atomically)."""
        if not self.splits["val"] or not self.main:
            return {}
        scores = self.scores(self.unwrapped, self.splits["val"], int(self.tcfg.eval_refs))
        metrics = {f"val/{k}": v for k, v in scores.items() if k not in ("per_concept",)}
        score = scores[SELECT_BY]
        if not math.isnan(score) and score > self.best["score"]:
            self.best = {"score": score, "step": done}
            save_encoder(self.run_dir / "best", self.unwrapped, self.fingerprint,
                         {"selected_on": "val", "selection": {"metric": f"val/{SELECT_BY}", "score": score,
                                                              "step": done, "n_refs": int(self.tcfg.eval_refs)}})
        return metrics

    def save_checkpoint(self, done: int) -> None:
        """Encoder, optimizer, schedule and state in run_dir/checkpoint, replaced atomically (main process)."""
        if not self.main:
            return
        with atomic_dir(self.run_dir / "checkpoint") as staging:
            save_encoder(staging / "encoder", self.unwrapped, self.fingerprint)
            torch.save(self.optimizer.state_dict(), staging / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), staging / "scheduler.pt")
            write_json(staging / "state.json", {"step": done, "steps": int(self.tcfg.steps), "best": self.best,
                                                "wandb_id": self.logger.wandb_id,
                                                "facts": self.run_facts(self.unwrapped.config)})

    def train(self) -> None:
        start = int((self.state or {}).get("step", 0))
        steps, every = int(self.tcfg.steps), int(self.tcfg.eval_every)
        bar = tqdm(range(start, steps), initial=start, total=steps, desc="train encoder", disable=not self.progress)
        for step in bar:
            record = self.train_step(step)
            done = step + 1
            if every and (done % every == 0 or done == steps):
                record |= self.evaluate(done)
            self.logger.log(record, done)
            bar.set_postfix(loss=f"{record['train/loss']:.3f}",
                            **({"val_auroc": f"{record['val/auroc']:.3f}"} if "val/auroc" in record else {}))
            if done % int(self.tcfg.checkpoint_every) == 0 or done == steps:
                self.save_checkpoint(done)
            self.accelerator.wait_for_everyone()

    def finish(self, started: float) -> dict:
        """The last encoder, the chosen one's test-concept scores (once) with 1 and max_photos photos, the summary."""
        if not self.main:
            return {"rank": self.accelerator.process_index}
        fingerprint = self.fingerprint
        save_encoder(self.run_dir / "encoder", self.unwrapped, fingerprint, {"step": int(self.tcfg.steps)})
        chosen = self.run_dir / ("best" if (self.run_dir / "best" / ENCODER_WEIGHTS).exists() else "encoder")
        encoder = load_encoder(chosen, self.backbone, fingerprint)
        test = {}
        for n_refs in sorted({1, int(encoder.config.max_photos)}) if self.splits["test"] else ():
            scores = self.scores(encoder, self.splits["test"], n_refs)
            test[f"{n_refs}_photos"] = scores
            self.logger.log({f"test/{n_refs}_photos/{k}": v for k, v in scores.items() if k != "per_concept"},
                            int(self.tcfg.steps))
        summary = {"steps": int(self.tcfg.steps), "wall_seconds": round(time.perf_counter() - started, 1),
                   "encoder": str(self.run_dir / "encoder"), "chosen": str(chosen),
                   "best": self.best if self.splits["val"] else None, "test": test,
                   "concepts": {k: len(v) for k, v in self.splits.items()}, "wandb": self.logger.wandb_id,
                   "metrics": str(self.run_dir / "metrics.jsonl")}
        self.logger.finish()
        return summary


def train_encoder(cfg: DictConfig, run_dir: Path) -> dict:
    """Train a concept encoder; returns the summary (paths, steps, validation choice, test-concept scores)."""
    started = time.perf_counter()
    trainer = EncoderTrainer(cfg, run_dir)
    trainer.setup()
    trainer.train()
    return trainer.finish(started)
