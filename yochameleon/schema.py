"""The shape of every config: dataclasses registered with Hydra's ConfigStore.

`train.yaml` and `eval.yaml` start their defaults lists with `train_schema` / `eval_schema`, so
Hydra merges every YAML file and command-line override into these types: a misspelt or unknown
key, or a value of the wrong type, fails at compose time naming the key and the file, before
anything runs. The VALUES live in the YAML files under yochameleon/conf/ (one place); a field
here is `???` (MISSING) when a shipped YAML always sets it, and has a default only when it is
optional for a user's own file (a concept's validation split, a model's path, ...).
Library classes read these objects and carry no defaults of their own.
"""


from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Choice(str, Enum):
    """A closed-choice setting: a wrong value stops the command at compose time, naming the key and the
    choices. A member is its own name (`trainer.precision=bf16`) and behaves as that string
    (`==`, dict keys, f-strings, JSON)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def _choices(name: str, *values: str) -> type[Choice]:
    return Choice(name, [(v, v) for v in values])  # functional API: names such as eval/recognition/auroc


# The choices, one place each (their meaning: the comments in the shipped YAML files).
Source = _choices("Source", "local", "tiny", "toyworld", "janus-tiny")            # yochameleon/sources.py
Dtype = _choices("Dtype", "auto", "float32", "bfloat16", "float16")               # backbone weights
Precision = _choices("Precision", "auto", "bf16", "no")                           # accelerate mixed precision
TrainDevice = _choices("TrainDevice", "auto", "cpu")
Optimizer = _choices("Optimizer", "adamw")                                        # training/optimization.py
LrSchedule = _choices("LrSchedule", "constant", "warmup_cosine")                 # training/optimization.py
# What chooses best/ on the validation split: a recognition figure every recipe reports (higher is better).
SelectBy = _choices("SelectBy", *(f"eval/recognition/{k}" for k in ("weighted", "auroc", "positive", "negative")))
SelfPromptLoss = _choices("SelfPromptLoss", "group", "token")                     # data/samples.py GROUP_LOSS
RecipeInit = _choices("RecipeInit", "reserved", "description", "encoder")         # concept/init.py
SelfPrompt = _choices("SelfPrompt", "forced", "emitted")
RetrievalIndex = _choices("RetrievalIndex", "auto", "brute", "faiss")
LoggerName = _choices("LoggerName", "wandb", "none")
LoggerMode = _choices("LoggerMode", "offline", "online", "disabled")
EvalSetKind = _choices("EvalSetKind", "dreambooth", "yollava")
EvalTask = _choices("EvalTask", "recognition", "vqa", "text_qa", "multi_concept", "generation", "forgetting")
EvalMethod = _choices("EvalMethod", "adapter", "encoder", "plain", "description", "reference_photos")
FeatureSource = _choices("FeatureSource", "backbone", "vision")                            # concept/encoder.py



@dataclass
class ModelConfig:
    """conf/model/*.yaml: which backbone, from where, in which precision, and its training defaults."""

    name: str = MISSING
    source: Source = Source["local"]    # local (model.path) | tiny | toyworld | janus-tiny: see yochameleon/sources.py
    path: Optional[Path] = None
    dtype: Dtype = Dtype["auto"]
    attn_implementation: str = "sdpa"
    lr: float = MISSING
    epochs: int = MISSING
    eval_every: int = MISSING


@dataclass
class ConceptConfig:
    """conf/concept/<name>.yaml: the subject's photos, its negatives and its splits."""

    name: str = MISSING
    photos: Any = MISSING
    negatives: Any = MISSING
    val_photos: Any = None           # validation split: chooses best/ (with val_negatives)
    val_negatives: Any = None
    test_photos: Any = None          # test split: scored once, at the end, for reporting
    test_negatives: Any = None
    conversations: Optional[str] = None
    description: Optional[str] = None
    class_noun: Optional[str] = None
    category: Optional[str] = None
    eval_subject: Optional[str] = None   # the subject's name in the evaluation set, when it differs
    data_root: Optional[str] = None      # for the concept file's own interpolations (conf/concept/bo.yaml)
    text_checks: Any = None              # multiple-choice text questions scored at the end of training


@dataclass
class SoftPositivesConfig:
    enabled: bool = MISSING
    spacing: int = MISSING
    pool_size: int = MISSING
    per_epoch: int = MISSING


@dataclass
class ConversationsConfig:
    generate_when_missing: bool = MISSING
    agree: bool = MISSING


@dataclass
class InferenceConfig:
    self_prompt: SelfPrompt = MISSING


@dataclass
class TasksConfig:
    recognition: bool = MISSING
    vqa: bool = MISSING
    text_qa: bool = MISSING
    generation: bool = MISSING


@dataclass
class RecipeConfig:
    """conf/recipe/*.yaml: the 3S recipe (tokens, soft positives, self-prompting) and the task mix."""

    name: str = MISSING
    k_g: int = MISSING
    k_u: int = MISSING
    first_token: str = MISSING
    shared_tokens: bool = MISSING
    self_prompting: bool = MISSING
    self_prompt_loss: SelfPromptLoss = MISSING
    balance_recognition: bool = MISSING
    negatives_per_photo: int = MISSING
    flip_generation: bool = MISSING  # generation targets mirrored at random (recognition photos always are)
    generation_group: str = MISSING  # g-tokens before an image: full | none | a number (data/samples.py)
    generation_repeats: int = MISSING  # each photo's generation samples per epoch
    generation_weight: float = MISSING  # a generation sample's loss weight relative to a text sample's
    generation_lr_scale: float = MISSING  # the g-token rows learn at trainer.lr times this
    max_row_norm: Optional[float] = None  # input rows kept within this multiple of the backbone's median row norm
    init: RecipeInit = MISSING  # rows start as the backbone's reserved rows, or the g-tokens from its description
    encoder: Optional[Path] = None  # recipe.init=encoder: the concept encoder whose output the rows start from
    encoder_lr_scale: float = MISSING  # recipe.init=encoder: trainer.lr times this
    soft_positives: SoftPositivesConfig = field(default_factory=SoftPositivesConfig)
    conversations: ConversationsConfig = field(default_factory=ConversationsConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)


@dataclass
class TrainerConfig:
    """conf/trainer/default.yaml: steps, optimizer, evaluation, checkpoints, precision."""

    epochs: float = MISSING
    max_steps: Optional[int] = None
    batch_size: int = MISSING
    grad_accum: int = MISSING
    lr: float = MISSING
    optimizer: Optimizer = MISSING
    lr_schedule: LrSchedule = MISSING  # constant | warmup_cosine (warmup_steps, then a half cosine to 0)
    warmup_steps: int = MISSING
    weight_decay: float = MISSING
    grad_clip: Optional[float] = MISSING
    length_group_ratio: float = MISSING
    gradient_checkpointing: bool = MISSING
    precision: Precision = MISSING
    device: TrainDevice = MISSING
    eval_every: int = MISSING
    eval_batch_size: int = MISSING
    sample_images: bool = MISSING
    sample_guidance: Optional[float] = MISSING  # null: the backbone family's default (Backbone.default_guidance)
    final_samples: int = MISSING  # images drawn at the end (samples/final_XX.png, contact_sheet.png); 0 = off
    checkpoint_every: int = MISSING
    select_best_by: SelectBy = MISSING
    deterministic: bool = MISSING
    resume: bool = MISSING
    progress: bool = MISSING


@dataclass
class LoggerConfig:
    """conf/logger/*.yaml: W&B (offline by default) or none."""

    name: LoggerName = MISSING
    mode: LoggerMode = LoggerMode["offline"]
    project: str = "yochameleon"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list = field(default_factory=list)


@dataclass
class RetrievalConfig:
    """train.yaml `retrieval`: hard negatives and soft positives (yochameleon.data.preparation)."""

    model: str = MISSING
    checkpoint: Optional[str] = None
    hard_negatives_per_photo: int = MISSING
    easy_negatives: int = MISSING
    duplicate_threshold: float = MISSING
    index: RetrievalIndex = MISSING
    duplicate_hash_bits: int = MISSING


@dataclass
class TrainConfig:
    """train.yaml: one training run (`python -m yochameleon.train +concept=<name>`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    concept: Optional[ConceptConfig] = None   # no default on purpose: `+concept=<name>`
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    seed: int = MISSING
    output_root: str = MISSING
    run_name: str = MISSING
    cache_dir: str = MISSING


@dataclass
class EvalSetConfig:
    """conf/eval_set/*.yaml: the shipped DreamBooth set or the published Yo'LLaVA files."""

    kind: EvalSetKind = MISSING
    dir: Optional[Path] = None
    images: Optional[Path] = None
    root: Optional[Path] = None
    visual_qa: Optional[Path] = None
    text_qa: Optional[Path] = None


@dataclass
class ClipConfig:
    model: str = MISSING
    checkpoint: Optional[Path] = None


@dataclass
class DinoConfig:
    checkpoint: Optional[Path] = None


@dataclass
class RecognitionEvalConfig:
    free_answer: bool = MISSING
    max_new_tokens: int = MISSING


@dataclass
class GenerationEvalConfig:
    prompts: list = MISSING
    n: int = MISSING
    # null: what the backbone records (Backbone.sampling), else the family's default
    temperature: Optional[float] = MISSING
    top_k: Optional[int] = MISSING
    top_p: Optional[float] = MISSING
    guidance_scale: Optional[float] = MISSING


@dataclass
class EvalConfig:
    """eval.yaml: the benchmark harness (`python -m evaluation.run +concept=<name> adapter=<dir>`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    concept: Optional[ConceptConfig] = None
    # Training settings a concept file may set beside its concept (the toy concepts set
    # recipe.negatives_per_photo and retrieval.easy_negatives, conf/toy/concept.yaml): checked against
    # the training schema, so any concept that trains also composes here; the harness does not read them.
    recipe: Optional[RecipeConfig] = None
    retrieval: Optional[RetrievalConfig] = None
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval_set: EvalSetConfig = field(default_factory=EvalSetConfig)
    adapter: Optional[Path] = None
    encoder: Optional[Path] = None       # a concept encoder: method `encoder` encodes the concept's photos
    encoder_photos: int = 5              # how many of the concept's training photos it encodes from
    extra_adapters: List[Path] = field(default_factory=list)
    subjects: dict = field(default_factory=dict)
    tasks: List[EvalTask] = MISSING
    methods: List[EvalMethod] = MISSING
    seed: int = MISSING
    device: str = MISSING
    dtype: Dtype = MISSING
    batch_size: int = MISSING
    output_root: str = MISSING
    run_name: str = MISSING
    cache_dir: str = MISSING
    recognition: RecognitionEvalConfig = field(default_factory=RecognitionEvalConfig)
    generation: GenerationEvalConfig = field(default_factory=GenerationEvalConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)


@dataclass
class EncoderDataConfig:
    """conf/encoder_data/*.yaml: a folder of concept folders (yochameleon/data/concept_folders.py)."""

    root: Path = MISSING
    val_concepts: Optional[List[str]] = None   # null (both): <root>/splits.json names the held-out concepts
    test_concepts: Optional[List[str]] = None
    class_noun: str = "subject"    # text QA: the backbone is asked ATTRIBUTE_QUESTIONS[category] about "the <noun>"
    category: str = "object"
    qa_photos: int = 2             # photos of each training concept the backbone is asked about
    folder_qa: bool = True         # a concept folder's qa.json, where it has one, is its text QA target
    qa_agree: bool = True          # the backbone's answers about a folder agree on one per question (generate_conversations)


@dataclass
class EncoderSizesConfig:
    """train_encoder.yaml `encoder`: the resampler and the concept's token layout."""

    k_g: int = MISSING
    k_u: int = MISSING
    first_token: str = MISSING
    width: int = MISSING
    layers: int = MISSING
    heads: int = MISSING
    max_photos: int = MISSING
    feature_source: FeatureSource = MISSING
    feature_model: Optional[Path] = None  # feature_source=vision: a local vision checkpoint's folder
    feature_layer: Optional[int] = None  # feature_source=backbone: null, the last states; n, after layer n


@dataclass
class EncoderRecipeConfig:
    """train_encoder.yaml `recipe`: how the encoded rows are used in prompts (written into every adapter made)."""

    self_prompting: bool = MISSING
    self_prompt_loss: SelfPromptLoss = MISSING
    generation_group: str = MISSING
    inference: InferenceConfig = field(default_factory=InferenceConfig)


@dataclass
class EncoderObjectiveConfig:
    """train_encoder.yaml `objective`: each concept's samples in a step."""

    recognition: int = MISSING
    positive_fraction: float = MISSING
    yes_no_weight: float = MISSING
    text_qa: int = MISSING
    generation: int = MISSING
    generation_weight: float = MISSING


@dataclass
class EncoderTrainerConfig:
    """train_encoder.yaml `trainer`."""

    steps: int = MISSING
    concepts_per_step: int = MISSING
    lr: float = MISSING
    optimizer: Optimizer = MISSING
    lr_schedule: LrSchedule = MISSING
    warmup_steps: int = MISSING
    weight_decay: float = MISSING
    grad_clip: Optional[float] = MISSING
    length_group_ratio: float = MISSING
    device: TrainDevice = MISSING
    eval_every: int = MISSING
    eval_refs: int = MISSING
    eval_batch_size: int = MISSING
    feature_memory_gib: float = MISSING
    checkpoint_every: int = MISSING
    resume: bool = MISSING
    progress: bool = MISSING


@dataclass
class EncoderTrainConfig:
    """train_encoder.yaml: one encoder training run (`python -m yochameleon.train_encoder`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: EncoderDataConfig = field(default_factory=EncoderDataConfig)
    encoder: EncoderSizesConfig = field(default_factory=EncoderSizesConfig)
    recipe: EncoderRecipeConfig = field(default_factory=EncoderRecipeConfig)
    objective: EncoderObjectiveConfig = field(default_factory=EncoderObjectiveConfig)
    trainer: EncoderTrainerConfig = field(default_factory=EncoderTrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = MISSING
    output_root: str = MISSING
    run_name: str = MISSING
    cache_dir: str = MISSING


def register_schemas() -> None:
    """Put `train_schema`, `eval_schema` and `encoder_schema` in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalConfig)
    store.store(name="encoder_schema", node=EncoderTrainConfig)
